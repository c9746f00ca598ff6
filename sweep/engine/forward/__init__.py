"""Forwards: the hooked forward, and suffix forwards per model family.

Add a family: one module with a ``SuffixForward`` subclass (its ``block`` and
``unsupported``), listed in ``FAMILIES``; the start-up check and the fallback come with it.
"""

from __future__ import annotations

from typing import Any

from sweep.engine.forward.base import Forward, choose, fallback
from sweep.engine.forward.gpt2 import GPT2Forward
from sweep.engine.forward.hooked import HookedForward

FAMILIES: list[type[Forward]] = [GPT2Forward]


def choose_forward(model: Any, engine: str) -> Forward:
    return choose(model, engine, FAMILIES, HookedForward)


__all__ = ["FAMILIES", "Forward", "HookedForward", "choose_forward", "fallback"]
