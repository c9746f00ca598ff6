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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sweep.components import Component
from sweep.errors import ConfigError
from sweep.interventions.base import Context, Intervention
from sweep.interventions.mean import Mean, MeanSpec
from sweep.interventions.patch import DIRECTIONS, Patch
from sweep.interventions.zero import Zero, ZeroSpec
from sweep.spec import InterventionSpec, one_of

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

ABLATIONS = ("patch", "zero", "mean")


@dataclass(frozen=True, slots=True)
class EAPSpec(InterventionSpec):
    KIND = "eap"

    kind: str = "eap"
    direction: str | None = None
    """``ablation=patch``: ``denoise`` (the clean run's sender outputs into the corrupted
    run; the default) or ``noise`` (back). Ablations change the clean run: ``noise``."""
    steps: int = 1
    """Inputs the gradient is averaged over (1: EAP; more: EAP-IG, the paper uses 5-20)."""
    verify_top_k: int = 0
    """Patch the K edges with the largest estimated effect exactly, into ``edges_exact``."""
    ablation: str = "patch"
    """A sender's change: ``patch`` (the other run's output), or in the clean run ``zero``
    or ``mean`` (its mean over the task's clean prompts at each position)."""

    def __post_init__(self) -> None:
        one_of("intervention.ablation", self.ablation, ABLATIONS)
        if self.direction is not None:
            one_of("intervention.direction", self.direction, DIRECTIONS)
        if self.ablation != "patch" and self.direction == "denoise":
            raise ConfigError(
                f"intervention.direction: denoise with intervention.ablation={self.ablation}; "
                "an ablation replaces the clean run's sender outputs (noising): leave "
                "intervention.direction out, or use intervention.ablation=patch to denoise"
            )
        resolved = self.direction or ("denoise" if self.ablation == "patch" else "noise")
        object.__setattr__(self, "direction", resolved)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(
                f"intervention.steps: must be 1 (EAP) or more (EAP-IG), got {self.steps}"
            )
        if int(self.verify_top_k) < 0:
            raise ConfigError(
                f"intervention.verify_top_k: must be 0 or more, got {self.verify_top_k}"
            )

    def identity(self) -> dict[str, Any]:
        """Stores made before ``ablation`` existed patched: the key appears when it is not."""
        out = InterventionSpec.identity(self)
        if self.ablation == "patch":
            del out["ablation"]
        return out


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
    def base_run(self) -> str:
        return super().base_run if self.ablation is None else "clean"

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
