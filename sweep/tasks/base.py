"""What every task kind yields: clean/corrupted prompt pairs with an answer and a wrong token
(or a set of each: greater-than's years above and at-or-below the start year).

Torch-free: task files are read and checked before any model loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from sweep.errors import TaskError

FIELDS = ("clean", "corrupted", "answer", "wrong")

Answer = str | tuple[str, ...]
"""A token's text (several tokens: a multi-token answer, teacher forced), or a set of
one-token texts that the metric sums or averages."""

CountTokens = Callable[[str], int]
"""How many tokens a text is for the model's tokenizer, without BOS (IOI picks one-token
names with it, and templates of one length)."""


def counted(count: CountTokens, texts: Sequence[str]) -> CountTokens:
    """``count`` with ``texts`` counted up front, in one tokenizer call where the counter
    has ``many`` (``sweep.tasks.tokenize.count_tokens``: one call per text costs more than
    the text); others are counted as asked."""
    many = getattr(count, "many", None)
    known = dict(zip(texts, many(list(texts)) if many else map(count, texts), strict=True))
    return lambda s: known[s] if s in known else count(s)


@dataclass(frozen=True, slots=True)
class Example:
    clean: str
    corrupted: str
    answer: Answer
    wrong: Answer
    source: str
    """Where it came from, for messages (``file.jsonl:3`` or ``ioi #3``)."""
    words: tuple[tuple[str, int], ...] = ()
    """Named positions by the character of ``clean`` where the named token starts (IOI's
    ``S1``, ``IO``...): the token index depends on the tokenizer, so it is found there."""
    positions: tuple[tuple[str, int], ...] = ()
    """Named positions by token index (negative: from the prompt's end), as a task file
    gives them."""
    template: int = -1
    """Which template the prompt was made from (-1: none)."""

    def __post_init__(self) -> None:
        if self.answer == self.wrong:
            raise TaskError(
                f"{self.source}: answer and wrong are both {self.answer!r}; the metric would "
                "be 0 for every cell. Give two different tokens"
            )
        both = [t for t in as_set(self.answer) if t in as_set(self.wrong)]
        if both:
            raise TaskError(
                f"{self.source}: {both[0]!r} is in both the answer and the wrong set; a token "
                "counts for one side only"
            )


def answer_text(answer: Answer) -> str:
    """An answer as the store keeps it: its text, or a set as a JSON list."""
    return answer if isinstance(answer, str) else json.dumps(list(answer))


def as_set(answer: Answer) -> tuple[str, ...]:
    """An answer as a set of token texts (one text: a set of one)."""
    return (answer,) if isinstance(answer, str) else answer


_NOT_TASK = ("source",)
_DEFAULTS = {"words": (), "positions": (), "template": -1}


def digest(examples: list[Example]) -> str:
    """Hash of the examples as read (not where they came from): a store refuses another task."""
    rows = [{k: v for k, v in asdict(e).items() if k not in _NOT_TASK} for e in examples]
    # Fields left at their defaults stay out: a file read before they existed hashes alike.
    rows = [{k: v for k, v in r.items() if k in FIELDS or v != _DEFAULTS[k]} for r in rows]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
