"""``intervention=eap``: edge attribution patching, a first-order score of every edge of an
edge sweep (``grid=edges``) from one forward and backward of the base run per step.

``steps=1`` is EAP (Syed et al. 2023); ``steps=N`` is EAP-IG (Hanna et al. 2024), the
gradient averaged over N inputs between the base run's and the source's (``sweep.engine.eap``).
An edge's source is the other run's sender output (``ablation=patch``, either direction)
or, in the clean run, its zero or mean ablation (``ablation=zero``/``mean``): the change a
circuit with that ablation makes when it cuts the edge, so its scores rank edges for it.
Values are stored as the metric the edge's patch is estimated to give, in the same layout
as exact edges, so every summary, picture and circuit reads them alike; their titles say
they are estimates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sweep.components import Component
from sweep.interventions.base import Context, Intervention
from sweep.interventions.mean import Mean
from sweep.interventions.patch import Patch
from sweep.interventions.specs import EAPSpec, MeanSpec, ZeroSpec
from sweep.interventions.zero import Zero
from sweep.spec import InterventionSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


class EAP(Patch):
    """Patching's direction, base run and sources (the other run's sender outputs), or an
    ablation's (zero, mean) in the clean run; the worker scores edges from gradients
    instead of patching them."""

    KIND = "eap"
    SPEC = EAPSpec

    def __init__(self, spec: InterventionSpec) -> None:
        super().__init__(spec)
        kind = getattr(spec, "ablation", "patch")
        self.ablation: Intervention | None = {
            "patch": None, "zero": Zero(ZeroSpec()), "mean": Mean(MeanSpec()),
        }[kind]  # fmt: skip

    def reads(self) -> str:
        return "other" if self.ablation is None else self.ablation.reads()

    @property
    def direction(self) -> str:
        return str(getattr(self.spec, "direction", None) or "denoise")

    @property
    def steps(self) -> int:
        return int(getattr(self.spec, "steps", 1))

    def prepare(self, ctx: Context) -> None:
        if self.ablation is not None:
            self.ablation.prepare(ctx)

    def prepare_block(self, block: BlockRuns) -> None:
        if self.ablation is not None:
            self.ablation.prepare_block(block)

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        if self.ablation is None:
            return super().sources(c, layer, block)
        return self.ablation.sources(c, layer, block)
