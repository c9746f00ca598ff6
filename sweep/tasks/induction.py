"""``task=induction``: repeated random letters, for the shipped induction model.

Clean: ``r1..r8 r1..r5`` -> ``r6``. Corrupted: the same with r5's first occurrence replaced
by a letter d not in the prompt, so no earlier "r5" exists to attend after: the
previous-token head writes d instead of r5 into position 6 and the induction head finds no
match. ``wrong`` is d.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from sweep.errors import TaskError
from sweep.spec import GeneratedTaskSpec
from sweep.tasks.base import CountTokens, Example

LETTERS = list(string.ascii_uppercase)
HALF = 8
"""Random letters in the first half of a prompt."""
REPEAT = 5
"""Letters of the repeat the prompt ends with; the answer is the next one."""


@dataclass(frozen=True, slots=True)
class InductionTaskSpec(GeneratedTaskSpec):
    """A generated task: ``n_prompts`` prompts drawn with ``seed``."""

    KIND = "induction"

    kind: str = "induction"


def text(letters: list[str]) -> str:
    return "".join(" " + x for x in letters)


def make_induction(n: int, seed: int, letters_in: list[str] = LETTERS) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        letters = rng.sample(letters_in, HALF + 1)
        seq, d = letters[:HALF], letters[HALF]
        first = list(seq)
        first[REPEAT - 1] = d
        clean = seq + seq[:REPEAT]
        corrupted = first + seq[:REPEAT]
        out.append(
            Example(text(clean), text(corrupted), " " + seq[REPEAT], " " + d, f"induction #{i}")
        )
    return out


def examples(spec: InductionTaskSpec, count: CountTokens) -> list[Example]:
    """Prompts of the letters the model's tokenizer reads as one token each (all 26 for
    the shipped model and GPT-2's; a tokenizer trained on little text has fewer)."""
    usable = [x for x in LETTERS if count(" " + x) == 1]
    if len(usable) < HALF + 1:
        raise TaskError(
            f"task=induction: this model's tokenizer reads only {len(usable)} of the letters "
            f"' A'..' Z' as one token; the task needs {HALF + 1}. It is made for the shipped "
            "induction model: use task=ioi, or task=prompts task.path=FILE"
        )
    return make_induction(spec.n_prompts, spec.seed, usable)
