"""What every task kind yields: clean/corrupted prompt pairs with an answer and a wrong token.

Torch-free: task files are read and checked before any model loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sweep.errors import TaskError

FIELDS = ("clean", "corrupted", "answer", "wrong")

SingleToken = Callable[[str], bool]
"""Whether a string is one token for the model's tokenizer (IOI picks names with it)."""


@dataclass(frozen=True, slots=True)
class Example:
    clean: str
    corrupted: str
    answer: str
    wrong: str
    source: str
    """Where it came from, for messages (``file.jsonl:3`` or ``ioi #3``)."""

    def __post_init__(self) -> None:
        if self.answer == self.wrong:
            raise TaskError(
                f"{self.source}: answer and wrong are both {self.answer!r}; the metric would "
                "be 0 for every cell. Give two different tokens"
            )


def digest(examples: list[Example]) -> str:
    """Hash of the examples as read (not where they came from): a store refuses another task."""
    rows = [{k: v for k, v in asdict(e).items() if k != "source"} for e in examples]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
