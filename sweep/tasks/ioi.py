"""Indirect-object-identification prompts (Wang et al. 2022, "Interpretability in the Wild").

Templates, names, places and objects follow the paper's dataset. The clean prompt is
an ABBA or BABA sentence whose answer is the indirect object; the corrupted prompt is
the paper's "ABC" distribution: the same sentence with three fresh, distinct names,
so the clean names carry no information there.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Any

from sweep.errors import ConfigError, TaskError
from sweep.spec import GeneratedTaskSpec
from sweep.tasks.base import CountTokens, Example, counted

log = logging.getLogger(__name__)


NAMED = ("S1", "S1+1", "IO", "S2", "END")
"""The positions the IOI paper analyses: the subject's first mention and the token after
it, the indirect object, the subject's second mention, and the last token."""


@dataclass(frozen=True, slots=True)
class IOITaskSpec(GeneratedTaskSpec):
    """A generated task: ``n_prompts`` prompts drawn with ``seed`` from ``templates``."""

    KIND = "ioi"
    NAMED = NAMED

    kind: str = "ioi"
    templates: Any = None
    """Template ids (0-14 BABA, 15-29 the same sentences in ABBA order), ``all``, or null:
    the templates of the one token length most of them share for the model's tokenizer."""

    def __post_init__(self) -> None:
        GeneratedTaskSpec.__post_init__(self)  # slots: no zero-argument super()
        object.__setattr__(self, "templates", _templates_key(self.templates))


def _templates_key(value: Any) -> tuple[int, ...] | str | None:
    if value is None or value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(
            f"task.templates: {value!r}; give template ids like [0,3] (0-{len(TEMPLATES) - 1}), "
            "all, or null (the templates of one token length)"
        )
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)
           or not 0 <= v < len(TEMPLATES)]  # fmt: skip
    if bad:
        raise ConfigError(
            f"task.templates: {bad} are not template ids; there are {len(TEMPLATES)} "
            f"(0-{len(BABA_TEMPLATES) - 1} BABA, {len(BABA_TEMPLATES)}-{len(TEMPLATES) - 1} "
            "the same sentences in ABBA order)"
        )
    return tuple(dict.fromkeys(value))


BABA_TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)


def _abba(template: str) -> str:
    """The same sentence with the first two names swapped (ABBA order)."""
    return template.replace("[B] and [A]", "[A] and [B]", 1)


TEMPLATES = BABA_TEMPLATES + tuple(_abba(t) for t in BABA_TEMPLATES)

NAMES = (
    "Michael",
    "Christopher",
    "Jessica",
    "Matthew",
    "Ashley",
    "Jennifer",
    "Joshua",
    "Amanda",
    "Daniel",
    "David",
    "James",
    "Robert",
    "John",
    "Joseph",
    "Andrew",
    "Ryan",
    "Brandon",
    "Jason",
    "Justin",
    "Sarah",
    "William",
    "Jonathan",
    "Stephanie",
    "Brian",
    "Nicole",
    "Nicholas",
    "Anthony",
    "Heather",
    "Eric",
    "Elizabeth",
    "Adam",
    "Megan",
    "Melissa",
    "Kevin",
    "Steven",
    "Thomas",
    "Timothy",
    "Christina",
    "Kyle",
    "Rachel",
    "Laura",
    "Lauren",
    "Amber",
    "Brittany",
    "Danielle",
    "Richard",
    "Kimberly",
    "Jeffrey",
    "Amy",
    "Crystal",
    "Michelle",
    "Tiffany",
    "Jeremy",
    "Benjamin",
    "Mark",
    "Emily",
    "Aaron",
    "Charles",
    "Rebecca",
    "Jacob",
    "Stephen",
    "Patrick",
    "Sean",
    "Erin",
    "Jamie",
    "Kelly",
    "Samantha",
    "Nathan",
    "Sara",
    "Dustin",
    "Paul",
    "Angela",
    "Tyler",
    "Scott",
    "Katherine",
    "Andrea",
    "Gregory",
    "Erica",
    "Mary",
    "Travis",
    "Lisa",
    "Kenneth",
    "Bryan",
    "Lindsey",
    "Kristen",
    "Jose",
    "Alexander",
    "Jesse",
    "Katie",
    "Lindsay",
    "Shannon",
    "Vanessa",
    "Courtney",
    "Christine",
    "Alicia",
    "Cody",
    "Allison",
    "Bradley",
    "Samuel",
)
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")


@dataclass(frozen=True, slots=True)
class IOIExample:
    clean: str
    corrupted: str
    answer: str
    """The indirect object, with its leading space."""
    wrong: str
    """The subject, with its leading space."""
    template: int = -1
    words: tuple[tuple[str, int], ...] = ()
    """Named position -> the character of ``clean`` where its token starts."""


PLACEHOLDER = re.compile(r"\[(A|B|PLACE|OBJECT)\]")


def _fill(
    template: str, a: str, b: str, s2: str, place: str, obj: str
) -> tuple[str, tuple[tuple[str, int], ...]]:
    """The sentence, and where (by character) each named word starts. In ABC prompts the
    subject's second mention ``s2`` is a third name."""
    parts = PLACEHOLDER.split(template)  # text, name, text, name, ...
    n_b = parts[1::2].count("B")
    text, words, b_seen = "", {}, 0
    for i, part in enumerate(parts):
        if i % 2 == 0:
            text += part
            continue
        if part == "B":
            b_seen += 1
            value = s2 if b_seen == n_b else b
            if b_seen == 1:
                words["S1"] = len(text) - 1  # the token is the name with its leading space
                words["S1+1"] = len(text) + len(value)
            if b_seen == n_b:
                words["S2"] = len(text) - 1
        elif part == "A":
            words["IO"] = len(text) - 1
            value = a
        else:
            value = place if part == "PLACE" else obj
        text += value
    return text, tuple((k, words[k]) for k in NAMED if k in words)


def usable_names(count: CountTokens) -> list[str]:
    """Names that are one token (with their leading space) for this tokenizer."""
    return [n for n in NAMES if count(" " + n) == 1]


def _one_token(words: tuple[str, ...], count: CountTokens) -> tuple[str, ...]:
    """The words that are one token (with their leading space), or all if none is."""
    return tuple(w for w in words if count(" " + w) == 1) or words


def choose_templates(count: CountTokens, names: list[str]) -> tuple[tuple[int, ...], str]:
    """The templates of the token length most templates have for this tokenizer (with
        one-token fillers), and a line saying so: every prompt then has one length (the words
    at a position still differ between templates and ABBA/BABA: name positions for those)."""
    place, obj = _one_token(PLACES, count)[0], _one_token(OBJECTS, count)[0]
    texts = [_fill(t, names[0], names[1], names[1], place, obj)[0] for t in TEMPLATES]
    count = counted(count, texts)
    lengths = [count(text) for text in texts]
    common = max(sorted(set(lengths)), key=lengths.count)
    chosen = tuple(i for i, n in enumerate(lengths) if n == common)
    return chosen, (
        f"task=ioi: {len(chosen)} of {len(TEMPLATES)} templates are {common} tokens long "
        "(without BOS) for this tokenizer; using those (task.templates=all for every template)"
    )


def make_ioi(
    n_prompts: int,
    seed: int,
    names: list[str],
    templates: tuple[int, ...] | None = None,
    places: tuple[str, ...] = PLACES,
    objects: tuple[str, ...] = OBJECTS,
) -> list[IOIExample]:
    """``n_prompts`` seeded IOI examples drawn from ``names`` (at least five needed).

    Prompts come in pairs (a triple at an odd end) of one template, place and object with
    different names: names are one token, so every prompt's token count occurs at least
    twice, and resample ablation finds a donor of the same length for every prompt.
    """
    if len(names) < 5:
        raise ValueError(f"IOI needs at least 5 single-token names, the tokenizer has {len(names)}")
    ids = templates or tuple(range(len(TEMPLATES)))
    rng = random.Random(seed)
    out = []
    groups = max(1, n_prompts // 2)
    settings: list[tuple[int, str, str]] = []
    for i in range(n_prompts):
        if min(i // 2, groups - 1) == len(settings):
            settings.append((rng.choice(ids), rng.choice(places), rng.choice(objects)))
        t, place, obj = settings[-1]
        a, b, c, d, e = rng.sample(names, 5)
        clean, words = _fill(TEMPLATES[t], a, b, b, place, obj)
        corrupted, _ = _fill(TEMPLATES[t], c, d, e, place, obj)
        out.append(IOIExample(clean, corrupted, " " + a, " " + b, t, words))
    return out


def corpus() -> list[str]:
    """Every name in every template once: enough text to train a tokenizer on."""
    lines = []
    for i, name in enumerate(NAMES):
        other = NAMES[(i + 1) % len(NAMES)]
        for j, t in enumerate(TEMPLATES):
            place, obj = PLACES[j % len(PLACES)], OBJECTS[(i + j) % len(OBJECTS)]
            lines.append(_fill(t, name, other, other, place, obj)[0] + " " + name)
    return lines


def examples(spec: IOITaskSpec, count: CountTokens) -> list[Example]:
    """IOI prompts from the names (and places, objects) that are one token for this
    model's tokenizer, with their named positions and template ids."""
    count = counted(count, [" " + w for w in (*NAMES, *PLACES, *OBJECTS)])
    names = usable_names(count)
    if len(names) < 5:
        raise TaskError(
            f"task=ioi: IOI needs at least 5 single-token names, the tokenizer has "
            f"{len(names)}; use task=prompts with your own prompts"
        )
    templates = spec.templates
    if templates is None:
        templates, line = choose_templates(count, names)
        log.info(line)
    made = make_ioi(
        spec.n_prompts, spec.seed, names, None if templates == "all" else templates,
        _one_token(PLACES, count), _one_token(OBJECTS, count),
    )  # fmt: skip
    return [
        Example(e.clean, e.corrupted, e.answer, e.wrong, f"ioi #{i}", words=e.words,
                positions=(("END", -1),), template=e.template)
        for i, e in enumerate(made)
    ]  # fmt: skip
