"""Frozen, validated value objects built from the Hydra config at the edge.

Everything here is checked without loading a model, so a bad config fails in
milliseconds with a message that names the key. Checks that need the model's shape
(layer in range, ...) live in ``sweep.plan``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.components import Component, get_component
from sweep.errors import ConfigError
from sweep.metrics import METRICS

DTYPES = ("float32", "float16", "bfloat16", "float64")
ENGINES = ("auto", "fast", "hooks")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    """Hub id, local checkpoint dir, or ``native``."""
    native: tuple[tuple[str, Any], ...]
    """Sorted items of the native config (hashable)."""
    compat: bool
    dtype: str
    device: str

    def native_dict(self) -> dict[str, Any]:
        return dict(self.native)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    kind: str
    """``prompts`` or ``ioi``."""
    path: str | None = None
    n_prompts: int = 0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class GridSpec:
    components: tuple[Component, ...]
    layers: tuple[int, ...] | None
    positions: tuple[int, ...] | None
    heads: tuple[int, ...] | None


ABLATIONS = ("zero", "mean", "resample")
INTERVENTIONS = ("patch", *ABLATIONS, "atp")


@dataclass(frozen=True, slots=True)
class InterventionSpec:
    kind: str
    """``patch``, ``zero``, ``mean``, ``resample`` or ``atp`` (attribution patching)."""
    direction: str = "denoise"
    """Patching: ``denoise`` (clean into corrupted) or ``noise`` (corrupted into clean)."""
    reference: str | None = None
    """Mean ablation: prompts file to average over (None: the task's clean prompts)."""
    samples: int = 1
    """Resample ablation: donor prompts drawn per prompt (values are averaged)."""
    seed: int = 0
    verify_top_k: int = 0
    """AtP: cells patched exactly after the estimates."""

    @property
    def is_ablation(self) -> bool:
        """Ablations change the clean run; patching changes the run ``direction`` names."""
        return self.kind in ABLATIONS

    @property
    def base(self) -> str:
        """The run being changed: ``clean`` or ``corrupted``."""
        if self.is_ablation or self.direction == "noise":
            return "clean"
        return "corrupted"


@dataclass(frozen=True, slots=True)
class RunnerSpec:
    kind: str
    """``local`` (in-process) or ``ray``."""
    address: str | None = None
    num_workers: int | None = None
    in_flight_per_worker: int = 2
    max_worker_restarts: int = 3
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Everything a sweep needs, validated; built once by ``SweepSpec.from_config``."""

    model: ModelSpec
    task: TaskSpec
    grid: GridSpec
    intervention: InterventionSpec
    metrics: tuple[str, ...]
    memory_mb: float
    engine: str
    progress: bool
    runner: RunnerSpec
    store_path: str
    chunk_bytes: int
    overwrite: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SweepSpec:
        intervention = _intervention_spec(cfg.intervention)
        metrics = _metrics(cfg.metric.names)
        if "kl" in metrics and intervention.kind == "atp" and intervention.base == "clean":
            raise ConfigError(
                "metric.names: kl with intervention=atp direction=noise linearises at the "
                "clean run, where KL from the clean run and its gradient are 0, so every "
                "estimate would be 0; use another metric or direction=denoise"
            )
        return cls(
            model=_model_spec(cfg.model),
            task=_task_spec(cfg.task),
            grid=_grid_spec(cfg.grid),
            intervention=intervention,
            metrics=metrics,
            memory_mb=_positive_float("runner.memory_mb", cfg.runner.memory_mb),
            engine=_one_of("runner.engine", cfg.runner.engine, ENGINES),
            progress=bool(cfg.runner.progress),
            runner=_runner_spec(cfg.runner),
            store_path=str(cfg.store.path),
            chunk_bytes=1024 * _positive("store.chunk_kb", cfg.store.chunk_kb),
            overwrite=bool(cfg.store.overwrite),
        )


def results_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that changes results (not runner, not store location)."""
    keep = ("model", "task", "grid", "intervention", "metric")
    out = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keep}
    out["store"] = {"chunk_kb": int(cfg.store.chunk_kb)}
    return json.loads(json.dumps(out, sort_keys=True))


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _positive(key: str, value: int) -> int:
    if int(value) <= 0:
        raise ConfigError(f"{key}: must be a positive integer, got {value}")
    return int(value)


def _positive_float(key: str, value: float) -> float:
    if not float(value) > 0:
        raise ConfigError(f"{key}: must be a positive number, got {value}")
    return float(value)


def _runner_spec(r: DictConfig) -> RunnerSpec:
    kind = _one_of("runner.kind", str(r.kind), ("local", "ray"))
    if kind == "local":
        return RunnerSpec(kind)
    workers = r.num_workers
    return RunnerSpec(
        kind=kind,
        address=None if r.address in (None, "") else str(r.address),
        num_workers=None if workers is None else _positive("runner.num_workers", workers),
        in_flight_per_worker=_positive("runner.in_flight_per_worker", r.in_flight_per_worker),
        max_worker_restarts=max(0, int(r.max_worker_restarts)),
        connect_timeout_s=float(r.connect_timeout_s),
    )


def _model_spec(m: DictConfig) -> ModelSpec:
    if not str(m.name):
        raise ConfigError("model.name: empty; give a hub id, a local directory or 'native'")
    native = OmegaConf.to_container(m.native, resolve=True)
    assert isinstance(native, dict)
    device = str(m.device)
    if device != "auto" and not (device == "cpu" or device.startswith(("cuda", "mps"))):
        raise ConfigError(f"model.device: {device!r}; use auto, cpu, cuda or cuda:N")
    return ModelSpec(
        name=str(m.name),
        native=tuple(sorted((str(k), v) for k, v in native.items())),
        compat=bool(m.compat),
        dtype=_one_of("model.dtype", str(m.dtype), DTYPES),
        device=device,
    )


def _task_spec(t: DictConfig) -> TaskSpec:
    kind = _one_of("task.kind", str(t.kind), ("prompts", "ioi", "induction"))
    if kind == "prompts":
        if OmegaConf.is_missing(t, "path"):
            raise ConfigError("task.path: missing; pass task.path=FILE (a JSON Lines task file)")
        path = Path(str(t.path))
        if not path.is_file():
            raise ConfigError(f"task.path: no such file: {path}")
        return TaskSpec(kind=kind, path=str(path.resolve()))
    return TaskSpec(kind=kind, n_prompts=_positive("task.n_prompts", t.n_prompts), seed=int(t.seed))


def _index_list(key: str, values: Any, allow_negative: bool = False) -> tuple[int, ...] | None:
    if values is None:
        return None
    out = tuple(int(v) for v in values)
    if not out:
        raise ConfigError(f"{key}: empty list; leave it out (null) to sweep all")
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: repeated entries in {list(out)}")
    if not allow_negative and min(out) < 0:
        raise ConfigError(f"{key}: negative index in {list(out)}")
    return out


def _grid_spec(g: DictConfig) -> GridSpec:
    names = list(g.components)
    if not names:
        raise ConfigError("grid.components: empty; name at least one component")
    if len(set(names)) != len(names):
        raise ConfigError(f"grid.components: repeated entries in {names}")
    return GridSpec(
        components=tuple(get_component(n) for n in names),
        layers=_index_list("grid.layers", g.layers),
        positions=_index_list("grid.positions", g.positions, allow_negative=True),
        heads=_index_list("grid.heads", g.heads),
    )


def _intervention_spec(i: DictConfig) -> InterventionSpec:
    kind = _one_of("intervention.kind", str(i.kind), INTERVENTIONS)
    spec = InterventionSpec(kind=kind)
    if kind in ("patch", "atp"):
        direction = _one_of("intervention.direction", str(i.direction), ("denoise", "noise"))
        spec = InterventionSpec(kind, direction=direction)
    if kind == "atp":
        top_k = int(i.verify_top_k)
        if top_k < 0:
            raise ConfigError(f"intervention.verify_top_k: must be 0 or more, got {top_k}")
        spec = InterventionSpec(kind, direction=spec.direction, verify_top_k=top_k)
    if kind == "mean" and i.reference is not None:
        ref = Path(str(i.reference)).expanduser()
        if not ref.is_file():
            raise ConfigError(f"intervention.reference: no such file: {ref}")
        spec = InterventionSpec(kind, reference=str(ref.resolve()))
    if kind == "resample":
        spec = InterventionSpec(
            kind, samples=_positive("intervention.samples", i.samples), seed=int(i.seed)
        )
    return spec


def _metrics(names: Any) -> tuple[str, ...]:
    out = tuple(str(n) for n in names)
    if not out:
        raise ConfigError("metric.names: empty; name at least one metric")
    for n in out:
        if n not in METRICS:
            raise ConfigError(
                f"metric.names: unknown metric {n!r}; choose from: {', '.join(METRICS)}"
            )
    if len(set(out)) != len(out):
        raise ConfigError(f"metric.names: repeated entries in {list(out)}")
    return out
