"""Forwards: the hooked forward, and suffix forwards per model family.

Add a family: one module with a ``SuffixForward`` subclass (its ``block`` and
``unsupported``; for a Hugging Face decoder, a ``DecoderForward`` subclass naming its
layer classes and what differs), listed in ``FAMILIES``; the start-up check and the
fallback come with it.
"""

from __future__ import annotations

from typing import Any

from sweep.engine.forward.base import Forward, choose, fallback
from sweep.engine.forward.gemma2 import Gemma2Forward
from sweep.engine.forward.gpt2 import GPT2Forward
from sweep.engine.forward.gptj import GPTJForward
from sweep.engine.forward.hooked import HookedForward
from sweep.engine.forward.llama import LlamaForward
from sweep.engine.forward.neox import NeoXForward

FAMILIES: list[type[Forward]] = [
    GPT2Forward,
    LlamaForward,
    Gemma2Forward,
    NeoXForward,
    GPTJForward,
]


def choose_forward(model: Any, engine: str) -> Forward:
    return choose(model, engine, FAMILIES, HookedForward)


__all__ = ["FAMILIES", "Forward", "HookedForward", "choose_forward", "fallback"]
