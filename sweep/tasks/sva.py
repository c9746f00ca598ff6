"""``task=sva``: subject-verb agreement across a distractor (Finlayson et al. 2021;
Marks et al. 2024's "across a prepositional phrase").

Clean: "The author near the guards" with a singular subject; the answer is the set of
singular verbs (" is", " was", " has"), the wrong set their plural forms. Corrupted: the
same sentence with the subject plural ("The authors near the guards"), so only the
subject's number differs. The distractor noun has the other number, so a model that
agrees with the nearest noun gets it wrong.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sweep.errors import TaskError
from sweep.spec import GeneratedTaskSpec
from sweep.tasks.base import CountTokens, Example

NOUNS = (
    ("author", "authors"), ("pilot", "pilots"), ("surgeon", "surgeons"), ("farmer", "farmers"),
    ("manager", "managers"), ("customer", "customers"), ("officer", "officers"),
    ("teacher", "teachers"), ("senator", "senators"), ("student", "students"),
    ("dancer", "dancers"), ("doctor", "doctors"), ("guard", "guards"), ("parent", "parents"),
    ("architect", "architects"), ("executive", "executives"), ("minister", "ministers"),
    ("skater", "skaters"), ("lawyer", "lawyers"), ("child", "children"),
)  # fmt: skip
"""(singular, plural) subjects and distractors."""
PREPOSITIONS = ("near", "behind", "beside", "with", "next to", "in front of")
TEMPLATE = "The {subject} {preposition} the {distractor}"
SINGULAR = (" is", " was", " has")
PLURAL = (" are", " were", " have")
NAMED = ("SUBJ", "DISTRACTOR", "END")


@dataclass(frozen=True, slots=True)
class SVATaskSpec(GeneratedTaskSpec):
    """A generated task: ``n_prompts`` prompts drawn with ``seed``; half have a singular
    subject (answer: singular verbs), half a plural one."""

    KIND = "sva"
    NAMED = NAMED

    kind: str = "sva"


def make_sva(
    n: int, seed: int, nouns: list[tuple[str, str]], prepositions: list[str]
) -> list[Example]:
    """Prompt i has a singular subject where i is even: the two numbers alternate, so the
    metric is not one verb form's preference."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        (s1, p1), (s2, p2) = rng.sample(nouns, 2)
        preposition = rng.choice(prepositions)
        singular = i % 2 == 0
        subject, other = (s1, p1) if singular else (p1, s1)
        distractor = p2 if singular else s2
        clean = TEMPLATE.format(subject=subject, preposition=preposition, distractor=distractor)
        corrupted = TEMPLATE.format(subject=other, preposition=preposition, distractor=distractor)
        answer, wrong = (SINGULAR, PLURAL) if singular else (PLURAL, SINGULAR)
        words = (("SUBJ", clean.index(f" {subject}")),
                 ("DISTRACTOR", clean.rindex(f" {distractor}")))  # fmt: skip
        out.append(Example(clean, corrupted, answer, wrong, f"sva #{i}", words=words,
                           positions=(("END", -1),)))  # fmt: skip
    return out


def corpus() -> list[str]:
    """Every noun in both numbers, every preposition and verb: enough text to train a
    tokenizer on."""
    lines = []
    for i, (singular, plural) in enumerate(NOUNS):
        s2, p2 = NOUNS[(i + 1) % len(NOUNS)]
        for preposition in PREPOSITIONS:
            for subject, distractor, verbs in ((singular, p2, SINGULAR), (plural, s2, PLURAL)):
                head = TEMPLATE.format(subject=subject, preposition=preposition,
                                       distractor=distractor)  # fmt: skip
                lines += [head + verb for verb in verbs]
    return lines


def examples(spec: SVATaskSpec, count: CountTokens) -> list[Example]:
    """Prompts of the nouns whose two numbers are one token each for this tokenizer, so
    clean and corrupted have the same token count."""
    nouns = [(s, p) for s, p in NOUNS if count(f" {s}") == count(f" {p}") == 1]
    verbs = all(count(v) == 1 for v in (*SINGULAR, *PLURAL))
    prepositions = [x for x in PREPOSITIONS if count(f" {x}") == len(x.split())]
    if len(nouns) < 2 or not verbs or not prepositions:
        raise TaskError(
            f"task=sva: this model's tokenizer reads {len(nouns)} of the task's nouns in both "
            "numbers as one token each (it needs 2), and the verbs ' is', ' are', ' was', "
            "' were', ' has', ' have' as one token each; use a model with an English "
            "tokenizer, or task=prompts with your own sentences"
        )
    return make_sva(spec.n_prompts, spec.seed, nouns, prepositions)
