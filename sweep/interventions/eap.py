"""``intervention=eap``: edge attribution patching, a first-order score of every edge of an
edge sweep (``grid=edges``) from one forward and backward of the base run per step.

``steps=1`` is EAP (Syed et al. 2023); ``steps=N`` is EAP-IG (Hanna et al. 2024), the
gradient averaged over N inputs between the two runs' (``sweep.engine.eap``). Values are
stored as the metric the edge's patch is estimated to give, in the same layout as exact
edges, so every summary, picture and circuit reads them alike; their titles say they are
estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.errors import ConfigError
from sweep.interventions.patch import DIRECTIONS, Patch
from sweep.spec import InterventionSpec, one_of


@dataclass(frozen=True, slots=True)
class EAPSpec(InterventionSpec):
    KIND = "eap"

    kind: str = "eap"
    direction: str = "denoise"
    """``denoise``: the clean run's sender outputs into the corrupted run; ``noise``: back."""
    steps: int = 1
    """Inputs the gradient is averaged over (1: EAP; more: EAP-IG, the paper uses 5-20)."""
    verify_top_k: int = 0
    """Patch the K edges with the largest estimated effect exactly, into ``edges_exact``."""

    def __post_init__(self) -> None:
        one_of("intervention.direction", self.direction, DIRECTIONS)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(
                f"intervention.steps: must be 1 (EAP) or more (EAP-IG), got {self.steps}"
            )
        if int(self.verify_top_k) < 0:
            raise ConfigError(
                f"intervention.verify_top_k: must be 0 or more, got {self.verify_top_k}"
            )


class EAP(Patch):
    """Patching's direction, base run and sources (the other run's sender outputs); the
    worker scores edges from gradients instead of patching them."""

    KIND = "eap"
    SPEC = EAPSpec

    @property
    def direction(self) -> str:
        return getattr(self.spec, "direction", "denoise")

    @property
    def steps(self) -> int:
        return int(getattr(self.spec, "steps", 1))
