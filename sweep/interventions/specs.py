"""The intervention kinds' config values, without torch: what the config checks read
(``sweep.config``), so a bad config is refused before the engine's modules load. Each
kind's behaviour is in its own module (``patch.py``...), which imports its spec from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweep.errors import ConfigError
from sweep.spec import InterventionSpec, existing_file, file_digest, one_of, positive

DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True, slots=True)
class PatchSpec(InterventionSpec):
    KIND = "patch"

    kind: str = "patch"
    direction: str = "denoise"
    """``denoise``: clean activations into the corrupted run; ``noise``: corrupted into clean."""

    def __post_init__(self) -> None:
        one_of("intervention.direction", self.direction, DIRECTIONS)

    @property
    def base_run(self) -> str:
        return base_of(self.direction)


def base_of(direction: str) -> str:
    return "corrupted" if direction == "denoise" else "clean"


@dataclass(frozen=True, slots=True)
class ZeroSpec(InterventionSpec):
    KIND = "zero"

    kind: str = "zero"


@dataclass(frozen=True, slots=True)
class MeanSpec(InterventionSpec):
    KIND = "mean"

    kind: str = "mean"
    reference: str | None = None
    """JSON Lines of prompts to average over (``{"prompt": ...}`` or task lines, whose
    ``clean`` is used); null averages over the task's clean prompts."""

    def __post_init__(self) -> None:
        if self.reference is not None:
            ref = existing_file("intervention.reference", self.reference)
            object.__setattr__(self, "reference", ref)

    def identity(self) -> dict[str, Any]:
        ref = self.reference
        return {"kind": self.kind, "reference": ref and file_digest("intervention.reference", ref)}


@dataclass(frozen=True, slots=True)
class ResampleSpec(InterventionSpec):
    KIND = "resample"

    kind: str = "resample"
    samples: int = 4
    """Each prompt's activation is replaced by another prompt's, this many times (averaged)."""
    seed: int = 0

    def __post_init__(self) -> None:
        positive("intervention.samples", self.samples)


@dataclass(frozen=True, slots=True)
class AtPSpec(InterventionSpec):
    KIND = "atp"

    kind: str = "atp"
    direction: str = "denoise"
    verify_top_k: int = 0
    """Patch the K cells with the largest estimated effect exactly, stored as ``*_exact``."""

    def __post_init__(self) -> None:
        one_of("intervention.direction", self.direction, DIRECTIONS)
        if int(self.verify_top_k) < 0:
            raise ConfigError(
                f"intervention.verify_top_k: must be 0 or more, got {self.verify_top_k}"
            )

    @property
    def base_run(self) -> str:
        return base_of(self.direction)


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

    @property
    def base_run(self) -> str:
        """Patching's, or the clean run for an ablation (its direction resolves to noise)."""
        return base_of(str(self.direction))

    def identity(self) -> dict[str, Any]:
        """Stores made before ``ablation`` existed patched: the key appears when it is not."""
        out = InterventionSpec.identity(self)
        if self.ablation == "patch":
            del out["ablation"]
        return out


SPECS: dict[str, type[InterventionSpec]] = {
    cls.KIND: cls for cls in (PatchSpec, ZeroSpec, MeanSpec, ResampleSpec, AtPSpec, EAPSpec)
}
"""Each kind's spec, by ``intervention.kind``."""
