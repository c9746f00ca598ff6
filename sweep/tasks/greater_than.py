"""``task=greater_than``: years that must end later than they began (Hanna et al. 2023,
"How does GPT-2 compute greater-than?").

Clean: "The war lasted from the year 1732 to the year 17"; the answer is the set of
two-digit endings above 32, the wrong set those at or below it, and the paper's metric is
``prob_diff`` (the probability of the first minus the second). Corrupted: the same
sentence from the year 1701 (the paper's "01" baseline), where nearly every ending is
above the start. The years are those the tokenizer reads as the century and the two-digit
ending, as GPT-2's does for most of 1100-1799.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sweep.errors import TaskError
from sweep.spec import GeneratedTaskSpec
from sweep.tasks.base import CountTokens, Example, counted

NOUNS = (
    "war", "expedition", "siege", "voyage", "reign", "campaign", "dynasty", "plague",
    "journey", "rivalry", "treaty", "invasion", "conflict", "project", "marriage", "trial",
    "friendship", "drought", "revolt", "occupation", "crusade", "famine", "pilgrimage",
    "blockade", "alliance", "empire", "tradition", "epidemic", "rule", "quest",
)  # fmt: skip
"""Event nouns of the paper's list (of those one token for the tokenizer)."""
TEMPLATE = "The {noun} lasted from the year {century}{start:02d} to the year {century}"
CENTURIES = range(11, 18)
STARTS = range(2, 99)
"""Start years' endings: 02-98, so both sets hold at least two endings."""
BASELINE = 1
"""The corrupted start ending (the paper's 01)."""
NAMED = ("NOUN", "XX1", "YY", "END")


@dataclass(frozen=True, slots=True)
class GreaterThanTaskSpec(GeneratedTaskSpec):
    """A generated task: ``n_prompts`` prompts drawn with ``seed``; score it with
    ``metric.names=[prob_diff]``, the paper's metric."""

    KIND = "greater_than"
    NAMED = NAMED

    kind: str = "greater_than"


def endings(count: CountTokens) -> bool:
    """Whether the tokenizer has every two-digit ending 00-99 as a token of its own."""
    return all(count(f"{k:02d}") == 1 for k in range(100))


def years(count: CountTokens, century: int) -> list[int]:
    """The start endings of a century that read as two tokens, the century then the
    ending (GPT-2 reads some years, such as " 1700", as one token)."""
    if count(f" {century}") != 1:
        return []
    return [y for y in (BASELINE, *STARTS) if count(f" {century}{y:02d}") == 2]


def make_greater_than(
    n: int, seed: int, nouns: list[str], usable: dict[int, list[int]]
) -> list[Example]:
    rng = random.Random(seed)
    centuries = sorted(usable)
    out = []
    for i in range(n):
        noun, century = rng.choice(nouns), rng.choice(centuries)
        start = rng.choice([y for y in usable[century] if y != BASELINE])
        clean = TEMPLATE.format(noun=noun, century=century, start=start)
        corrupted = TEMPLATE.format(noun=noun, century=century, start=BASELINE)
        xx1 = clean.index(f" {century}")
        words = (("NOUN", clean.index(f" {noun}")), ("XX1", xx1), ("YY", xx1 + 3))
        out.append(
            Example(
                clean, corrupted,
                tuple(f"{k:02d}" for k in range(start + 1, 100)),
                tuple(f"{k:02d}" for k in range(start + 1)),
                f"greater_than #{i}", words=words, positions=(("END", -1),),
            )
        )  # fmt: skip
    return out


def corpus() -> list[str]:
    """Every noun, century and ending in the template once, and each ending alone: enough
    text to train a tokenizer on (with two-digit groups as pre-tokens, as GPT-2 reads
    years)."""
    lines = [f"{k:02d}" for k in range(100)]
    for i, noun in enumerate(NOUNS):
        for century in CENTURIES:
            for start in (BASELINE, *STARTS[i % 5 :: 5]):
                lines.append(TEMPLATE.format(noun=noun, century=century, start=start))
    return lines


def examples(spec: GreaterThanTaskSpec, count: CountTokens) -> list[Example]:
    """Prompts of the nouns and years this tokenizer reads as the paper's do."""
    texts = [f"{k:02d}" for k in range(100)] + [f" {x}" for x in NOUNS]
    texts += [f" {c}" for c in CENTURIES]
    texts += [f" {c}{y:02d}" for c in CENTURIES for y in (BASELINE, *STARTS)]
    count = counted(count, texts)  # one tokenizer call for the ~700 years, not one each
    usable = {c: ys for c in CENTURIES if BASELINE in (ys := years(count, c)) and len(ys) > 1}
    nouns = [x for x in NOUNS if count(f" {x}") == 1]
    if not endings(count) or not usable or not nouns:
        raise TaskError(
            "task=greater_than: this model's tokenizer does not read years as the century "
            "and a two-digit ending (' 17' + '32', with every ending '00'-'99' one token, as "
            "GPT-2's does); use a GPT-2-family model, or task=prompts with your own years"
        )
    return make_greater_than(spec.n_prompts, spec.seed, nouns, usable)
