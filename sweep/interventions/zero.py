"""``intervention=zero``: the clean run with the cell set to 0."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sweep.components import Component
from sweep.interventions.base import Intervention
from sweep.interventions.specs import ZeroSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


class Zero(Intervention):
    KIND = "zero"
    SPEC = ZeroSpec

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        return [torch.zeros_like(block.base[c.hook_name(layer)])]
