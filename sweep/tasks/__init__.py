"""Task kinds: a registry from ``task.kind`` to its spec and its examples.

Add a kind: one module with a frozen ``TaskSpec`` subclass and an ``examples(spec,
count_tokens)`` function, registered here. Tokenizing (``sweep.tasks.tokenize``) is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweep.spec import TaskSpec
from sweep.tasks import docstring, greater_than, induction, ioi, prompts, sva
from sweep.tasks.base import CountTokens, Example

TASKS: dict[str, tuple[type[TaskSpec], Callable[[Any, CountTokens], list[Example]]]] = {
    "prompts": (prompts.PromptsTaskSpec, prompts.examples),
    "ioi": (ioi.IOITaskSpec, ioi.examples),
    "induction": (induction.InductionTaskSpec, induction.examples),
    "greater_than": (greater_than.GreaterThanTaskSpec, greater_than.examples),
    "sva": (sva.SVATaskSpec, sva.examples),
    "docstring": (docstring.DocstringTaskSpec, docstring.examples),
}


def load_examples(spec: TaskSpec, count: CountTokens) -> list[Example]:
    return TASKS[spec.kind][1](spec, count)


__all__ = ["TASKS", "Example", "load_examples"]
