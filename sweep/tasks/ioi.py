"""Indirect-object-identification prompts (Wang et al. 2022, "Interpretability in the Wild").

Templates, names, places and objects follow the paper's dataset. The clean prompt is
an ABBA or BABA sentence whose answer is the indirect object; the corrupted prompt is
the paper's "ABC" distribution: the same sentence with three fresh, distinct names,
so the clean names carry no information there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sweep.errors import TaskError
from sweep.spec import TaskSpec, positive
from sweep.tasks.base import Example, SingleToken


@dataclass(frozen=True, slots=True)
class IOITaskSpec(TaskSpec):
    """A generated task: ``n_prompts`` prompts drawn with ``seed``."""

    KIND = "ioi"

    kind: str = "ioi"
    n_prompts: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        positive("task.n_prompts", self.n_prompts)


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


def _fill(template: str, a: str, b: str, s2: str, place: str, obj: str) -> str:
    text = template.replace("[PLACE]", place).replace("[OBJECT]", obj)
    first_b = text.index("[B]")
    # The subject's second mention is the last [B]; in ABC prompts it is a third name.
    last_b = text.rindex("[B]")
    text = text[:last_b] + s2 + text[last_b + 3 :]
    if first_b != last_b:
        text = text.replace("[B]", b, 1)
    return text.replace("[A]", a)


def usable_names(is_single_token: Callable[[str], bool]) -> list[str]:
    """Names that are one token (with their leading space) for this tokenizer."""
    return [n for n in NAMES if is_single_token(" " + n)]


def make_ioi(n_prompts: int, seed: int, names: list[str]) -> list[IOIExample]:
    """``n_prompts`` seeded IOI examples drawn from ``names`` (at least five needed).

    Prompts come in pairs (a triple at an odd end) of one template, place and object with
    different names: names are one token, so every prompt's token count occurs at least
    twice, and resample ablation finds a donor of the same length for every prompt.
    """
    if len(names) < 5:
        raise ValueError(f"IOI needs at least 5 single-token names, the tokenizer has {len(names)}")
    rng = random.Random(seed)
    out = []
    groups = max(1, n_prompts // 2)
    settings: list[tuple[str, str, str]] = []
    for i in range(n_prompts):
        if min(i // 2, groups - 1) == len(settings):
            settings.append((rng.choice(TEMPLATES), rng.choice(PLACES), rng.choice(OBJECTS)))
        template, place, obj = settings[-1]
        a, b, c, d, e = rng.sample(names, 5)
        clean = _fill(template, a, b, b, place, obj)
        corrupted = _fill(template, c, d, e, place, obj)
        out.append(IOIExample(clean, corrupted, " " + a, " " + b))
    return out


def corpus() -> list[str]:
    """Every name in every template once: enough text to train a tokenizer on."""
    lines = []
    for i, name in enumerate(NAMES):
        other = NAMES[(i + 1) % len(NAMES)]
        for j, t in enumerate(TEMPLATES):
            place, obj = PLACES[j % len(PLACES)], OBJECTS[(i + j) % len(OBJECTS)]
            lines.append(_fill(t, name, other, other, place, obj) + " " + name)
    return lines


def examples(spec: IOITaskSpec, single_token: SingleToken) -> list[Example]:
    """IOI prompts from the names that are one token for this model's tokenizer."""
    names = usable_names(single_token)
    try:
        made = make_ioi(spec.n_prompts, spec.seed, names)
    except ValueError as e:
        raise TaskError(f"task=ioi: {e}; use task=prompts with your own prompts") from None
    return [
        Example(e.clean, e.corrupted, e.answer, e.wrong, f"ioi #{i}") for i, e in enumerate(made)
    ]
