"""``intervention=zero``: the clean run with the cell set to 0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sweep.components import Component
from sweep.interventions.base import Intervention
from sweep.spec import InterventionSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


@dataclass(frozen=True, slots=True)
class ZeroSpec(InterventionSpec):
    KIND = "zero"

    kind: str = "zero"


class Zero(Intervention):
    KIND = "zero"
    SPEC = ZeroSpec

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        return [torch.zeros_like(block.base[c.hook_name(layer)])]
