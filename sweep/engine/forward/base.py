"""The forward protocol: how a batch of patched cells becomes the logits the metric reads
(each prompt's last position; the positions of a multi-token answer).

A forward starts at the patched layer from a prompt block's cached base run. Each
implementation says what of the base run it needs cached, how many bytes a batch row
costs (``runner.memory_mb`` is divided by it), and checks itself against the model's own
hooks at start-up; ``choose`` picks the fastest one the model supports.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sweep.components import Component
from sweep.engine.cells import Batch
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

log = logging.getLogger(__name__)


class Forward(ABC):
    NAME: ClassVar[str]
    """What the summary line calls it: ``fast`` (a suffix forward) or ``hooks``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @staticmethod
    def unsupported(model: Any) -> str | None:
        """Why this forward cannot run ``model``, or None."""
        return None

    @abstractmethod
    def base_hooks(self, layers: tuple[int, ...]) -> set[str]:
        """Hooks of the base run to cache, for cells at ``layers``."""

    @abstractmethod
    def row_bytes(self, seq_len: int, reads: int = 1) -> int:
        """Activation bytes one batch row needs (an upper estimate, from measured peaks),
        its logits read at ``reads`` positions."""

    def check(self, block: BlockRuns, layer: int) -> str | None:
        """Compare an unpatched forward from ``layer`` with the model's own run; the
        first difference found, or None."""
        return None

    @abstractmethod
    def logits(
        self, c: Component, layer: int, batch: Batch, src: torch.Tensor, block: BlockRuns
    ) -> torch.Tensor:
        """[rows, vocab] at each row's last position ([rows, reads, vocab] at its read
        positions), with its cell patched from ``src``."""


def itemsize(model: Any) -> int:
    return torch.finfo(getattr(model.cfg, "dtype", torch.float32)).bits // 8


def activation_row_bytes(model: Any, seq_len: int, reads: int = 1) -> int:
    """Bytes of one row's activations in one block: per position the residual and its
    copies, q/k/v/z and their padded copies, the MLP hidden layer with the activation
    function's temporaries; per head the [seq, seq] scores; the read positions' logits and
    the metric's softmax. Factors set from measured peaks (bench/patching_speed.py) with a
    margin for the allocator."""
    cfg = model.cfg
    d, d_mlp, h = int(cfg.d_model), int(cfg.d_mlp or 4 * cfg.d_model), int(cfg.n_heads)
    per_row = seq_len * (24 * d + 8 * d_mlp) + 2 * h * seq_len**2 + 3 * reads * int(cfg.d_vocab)
    return itemsize(model) * per_row


def choose(
    model: Any, engine: str, families: list[type[Forward]], hooked: type[Forward]
) -> Forward:
    """The first family forward that implements ``model`` (``engine=auto|fast``), else the
    hooked forward; ``fast`` refuses to fall back."""
    if engine == "hooks":
        return hooked(model)
    reasons = []
    for cls in families:
        why = cls.unsupported(model)
        if why is None:
            return cls(model)
        reasons.append(why)
    return fallback(engine, f"this model is not supported: {'; '.join(reasons)}", hooked(model))


def fallback(engine: str, why: str, hooked: Forward) -> Forward:
    if engine == "fast":
        raise ConfigError(f"runner.engine=fast: {why}; use runner.engine=auto or hooks")
    log.warning("using the model's hooked forward (slower): %s", why)
    return hooked
