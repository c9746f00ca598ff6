"""``intervention=patch``: the other run's activation, in either direction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from sweep.components import Component
from sweep.interventions.base import Intervention
from sweep.spec import InterventionSpec, one_of

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True, slots=True)
class PatchSpec(InterventionSpec):
    KIND = "patch"

    kind: str = "patch"
    direction: str = "denoise"
    """``denoise``: clean activations into the corrupted run; ``noise``: corrupted into clean."""

    def __post_init__(self) -> None:
        one_of("intervention.direction", self.direction, DIRECTIONS)


def base_of(direction: str) -> str:
    return "corrupted" if direction == "denoise" else "clean"


class Patch(Intervention):
    KIND = "patch"
    SPEC: ClassVar[type[InterventionSpec]] = PatchSpec
    READS = "other"

    @property
    def base_run(self) -> str:
        return base_of(getattr(self.spec, "direction", "denoise"))

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        return [block.source[c.hook_name(layer)]]
