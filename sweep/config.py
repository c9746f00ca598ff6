"""Hydra structured configs: the schema every config group is checked against.

Registered in Hydra's ConfigStore so that an unknown key or a wrong type fails at
composition, naming the key, before any model is loaded. These are mutable because
Hydra merges overrides into them; ``sweep.spec`` turns them into frozen value objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def _tiny_native() -> dict[str, Any]:
    return dict(
        n_layers=2,
        d_model=64,
        n_ctx=128,
        d_head=16,
        n_heads=4,
        d_mlp=256,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=0,
    )


@dataclass
class ModelConfig:
    name: str = "native"
    """Hub id, local checkpoint directory, ``native`` (random weights from ``native``) or
    ``induction`` (the shipped 2-layer induction model, ``sweep.induction``)."""
    native: dict[str, Any] = field(default_factory=_tiny_native)
    """TransformerLens config for ``name=native``; ``d_vocab`` defaults to the tokenizer's."""
    compat: bool = False
    """Call ``enable_compatibility_mode()`` (HookedTransformer-style processed weights)."""
    dtype: str = "float32"
    device: str = "auto"
    """``auto`` picks CUDA when there is one, else CPU."""


@dataclass
class PromptsTaskConfig:
    kind: str = "prompts"
    path: str = MISSING
    """JSON Lines file: {"clean", "corrupted", "answer", "wrong"} per line."""


@dataclass
class IOITaskConfig:
    """A generated task: ``n_prompts`` prompts drawn with ``seed``."""

    kind: str = "ioi"
    n_prompts: int = 16
    seed: int = 0


@dataclass
class InductionTaskConfig(IOITaskConfig):
    kind: str = "induction"


@dataclass
class GridConfig:
    components: list[str] = field(default_factory=lambda: ["resid_pre", "attn_out", "z"])
    layers: list[int] | None = None
    """Layers to sweep (default: all)."""
    positions: list[int] | None = None
    """Token positions to sweep; negative counts from the end (default: all)."""
    heads: list[int] | None = None
    """Heads to sweep (default: all)."""


@dataclass
class PatchConfig:
    kind: str = "patch"
    direction: str = "denoise"
    """``denoise``: clean activations into the corrupted run; ``noise``: corrupted into clean."""


@dataclass
class ZeroConfig:
    kind: str = "zero"


@dataclass
class MeanConfig:
    kind: str = "mean"
    reference: str | None = None
    """JSON Lines of prompts to average over (``{"prompt": ...}`` or task lines, whose
    ``clean`` is used); null averages over the task's clean prompts."""


@dataclass
class ResampleConfig:
    kind: str = "resample"
    samples: int = 4
    """Each prompt's activation is replaced by another prompt's, this many times (averaged)."""
    seed: int = 0


@dataclass
class AtPConfig:
    kind: str = "atp"
    direction: str = "denoise"
    verify_top_k: int = 0
    """Patch the K cells with the largest estimated effect exactly, stored as ``*_exact``."""


@dataclass
class MetricConfig:
    names: list[str] = field(default_factory=lambda: ["logit_diff"])


@dataclass
class LocalRunnerConfig:
    kind: str = "local"
    memory_mb: float = 1024.0
    """Working memory of one batched patched forward; cells per forward are sized to it."""
    engine: str = "auto"
    """``fast`` (suffix forward), ``hooks`` (the model's own hooked forward) or ``auto``."""
    progress: bool = True


@dataclass
class RayRunnerConfig:
    kind: str = "ray"
    memory_mb: float = 1024.0
    engine: str = "auto"
    progress: bool = True
    address: str | None = None
    """Ray to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); null starts a local Ray."""
    num_workers: int | None = None
    """Workers (each loads the model once); default one per GPU, or 1 on a CPU-only cluster."""
    in_flight_per_worker: int = 2
    """Units queued on each worker, so the next one starts as soon as one finishes."""
    max_worker_restarts: int = 3
    """How often each worker may die (killed, out of memory) and be replaced."""
    connect_timeout_s: float = 5.0


@dataclass
class StoreConfig:
    path: str = "outputs/sweep.zarr"
    chunk_kb: int = 1024
    """Target size of one zarr chunk (= one work unit); layers are grouped up to it."""
    overwrite: bool = False
    """Delete a store written by a different config instead of refusing it."""
    plots: bool = True
    """After a command-line sweep, draw heatmaps (PNG) and an HTML page into STORE.plots."""


@dataclass
class SweepConfig:
    model: Any = MISSING
    task: Any = MISSING
    grid: Any = MISSING
    intervention: Any = MISSING
    metric: Any = MISSING
    runner: Any = MISSING
    store: Any = MISSING


def register() -> None:
    """Put every schema where conf/ 's defaults lists expect it."""
    cs = ConfigStore.instance()
    cs.store(name="sweep_schema", node=SweepConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="task", name="base_prompts", node=PromptsTaskConfig)
    cs.store(group="task", name="base_ioi", node=IOITaskConfig)
    cs.store(group="task", name="base_induction", node=InductionTaskConfig)
    cs.store(group="grid", name="base_grid", node=GridConfig)
    cs.store(group="intervention", name="base_patch", node=PatchConfig)
    cs.store(group="intervention", name="base_zero", node=ZeroConfig)
    cs.store(group="intervention", name="base_mean", node=MeanConfig)
    cs.store(group="intervention", name="base_resample", node=ResampleConfig)
    cs.store(group="intervention", name="base_atp", node=AtPConfig)
    cs.store(group="metric", name="base_metric", node=MetricConfig)
    cs.store(group="runner", name="base_local", node=LocalRunnerConfig)
    cs.store(group="runner", name="base_ray", node=RayRunnerConfig)
    cs.store(group="store", name="base_store", node=StoreConfig)
