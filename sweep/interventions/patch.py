"""``intervention=patch``: the other run's activation, in either direction."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from sweep.components import Component
from sweep.interventions.base import Intervention
from sweep.interventions.specs import PatchSpec
from sweep.spec import InterventionSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


class Patch(Intervention):
    KIND = "patch"
    SPEC: ClassVar[type[InterventionSpec]] = PatchSpec
    READS = "other"

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        return [block.source[c.hook_name(layer)]]
