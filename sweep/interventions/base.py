"""The interface every intervention implements: which run it changes, what a cell receives.

An intervention is looked up once by its kind (``sweep.interventions.build``) and then
asked, per component and layer, for its sources: the activations a patched cell takes,
one tensor per sample (values are averaged over samples). Activations are indexed by the
prompt block's own prompts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sweep.components import Component
from sweep.spec import InterventionSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns
    from sweep.tasks.tokenize import TokenizedTask


@dataclass(frozen=True)
class Context:
    """What an intervention may use to prepare itself once per worker."""

    model: Any
    task: TokenizedTask
    grid: tuple[tuple[Component, int], ...]
    """Every (component, layer) of the grid."""
    run: Callable[[torch.Tensor, torch.Tensor, frozenset[str]], dict[str, torch.Tensor]]
    """Run token ids [prompt, pos] with their lengths through the model, returning the
    activations at the named hooks."""
    metrics: tuple[str, ...]
    chunk: int
    """Prompts per forward of a pass over the whole task (bounded memory)."""

    @property
    def hooks(self) -> frozenset[str]:
        return frozenset(c.hook_name(layer) for c, layer in self.grid)


class Intervention(ABC):
    """What a patched cell receives, and which run it changes."""

    KIND: ClassVar[str]
    SPEC: ClassVar[type[InterventionSpec]]
    READS: ClassVar[str] = "base"
    """Whose activations at the grid's hooks the sources come from: the ``base`` run
    itself (ablations) or the ``other`` run (patching)."""

    def __init__(self, spec: InterventionSpec) -> None:
        self.spec = spec

    def reads(self) -> str:
        """``READS``, or what an intervention that wraps another reads (EAP's ablations)."""
        return self.READS

    @property
    def base_run(self) -> str:
        """The run being changed: ``clean`` or ``corrupted``, as its spec says."""
        return self.spec.base_run

    def prepare(self, ctx: Context) -> None:  # noqa: B027 (most kinds need nothing)
        """Once per worker, before any block (means over the task, resampling donors)."""

    def prepare_block(self, block: BlockRuns) -> None:  # noqa: B027
        """When a block's runs are built: what its sources need beyond them (donors' runs,
        AtP's products), kept in ``block.extras`` so the cache counts and evicts it."""

    @abstractmethod
    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        """What each sample writes into ``c`` at ``layer``: [prompt, ...] per sample."""


class Estimator(Intervention):
    """Estimates every cell at once instead of patching it; ``exact`` patches a cell."""

    @property
    @abstractmethod
    def exact(self) -> Intervention: ...

    @abstractmethod
    def estimate(self, c: Component, layer: int, block: BlockRuns) -> torch.Tensor:
        """[metric, prompt, *dims] estimated metric of patching each cell of ``c``."""

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        return self.exact.sources(c, layer, block)
