"""The driver: config -> plan -> runner -> store. ``sweep.run`` is the Python entry point."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from sweep import config
from sweep.analysis import top_cells
from sweep.components import get_component
from sweep.plan import Plan, make_plan
from sweep.runner import Runner, make_runner
from sweep.spec import SweepSpec, results_config
from sweep.store import Location, ResultStore, StoreMeta, check_config, location, open_results

log = logging.getLogger(__name__)


def conf_dir() -> Path:
    """conf/ at the repository root (editable install) or shipped as sweep/conf (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError("patchsweep's conf/ directory is missing from this install")


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config ``python -m sweep OVERRIDES`` would run, without Hydra's run directory."""
    config.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


@dataclass(frozen=True, slots=True)
class SweepSummary:
    path: Location
    """The store: a local Path, or the fsspec URL given as store.path."""
    units_total: int
    units_run: int
    """Units computed by this run (the rest were done by earlier runs)."""
    cells_run: int
    seconds: float
    """Wall time of the whole run, model loading included."""
    sweep_seconds: float
    """Wall time from the first unit sent to the last result written."""
    run_number: int
    workers: int
    worker_restarts: int
    engine: str
    """The patched forward the workers used: ``fast`` or ``hooks``."""


def _verify_top_cells(
    runner: Runner, store: ResultStore, plan: Plan, spec: SweepSpec, run_number: int
) -> None:
    """AtP: patch the K cells with the largest estimated effect exactly, into ``*_exact``."""
    iv = spec.intervention
    top = top_cells(open_results(store.path), iv.verify_top_k)
    log.info("AtP: verifying the top %d cells by exact patching", len(top))
    axes = plan.axes
    for name, group in top.groupby("component", sort=False):
        c = get_component(str(name))
        cells = [(int(r.layer), int(r.pos), int(r.head)) for r in group.itertuples()]
        index = []
        for layer, pos, head in cells:
            where = [axes.layers.index(layer)]
            where += [axes.positions.index(pos)] if c.has_pos else []
            where += [axes.heads.index(head)] if c.has_head else []
            index.append(tuple(where))
        store.write_cells(f"{name}_exact", index, runner.exact(str(name), cells))
    store.mark_verified(run_number)


def run(overrides: list[str] | None = None) -> Location:
    """Run or resume the sweep the overrides describe; returns the store path."""
    return run_config(compose_config(overrides)).path


def run_config(cfg: DictConfig) -> SweepSummary:
    start = time.perf_counter()
    spec = SweepSpec.from_config(cfg)
    path = location(spec.store_path)
    fingerprint: dict[str, Any] = {"config": results_config(cfg)}
    if not spec.overwrite:
        check_config(path, fingerprint)  # fail before the model loads
    runner = make_runner(spec)
    try:
        info = runner.describe()
        plan = make_plan(
            spec.grid, info.shape, info.seq_len, info.n_prompts, spec.metrics, spec.chunk_bytes
        )
        fingerprint["task_digest"] = info.task_digest
        iv = spec.intervention
        meta = StoreMeta(
            OmegaConf.to_yaml(cfg, resolve=True),
            fingerprint,
            spec.model.name,
            intervention=iv.kind,
            base_run=iv.base,
            exact=iv.verify_top_k > 0,
        )
        store = ResultStore.open_or_create(path, plan, info, meta, overwrite=spec.overwrite)
        done = store.done()
        run_number = int(done.max(initial=0)) + 1
        todo = [u for u in plan.units if done[u.index] == 0]
        log.info(
            "%d of %d units to compute, %d done earlier",
            len(todo),
            len(plan.units),
            len(plan.units) - len(todo),
        )
        bar = tqdm(total=len(todo), unit="unit", disable=not spec.progress, desc="sweep")
        cells, sweep_start = 0, time.perf_counter()
        for unit, values in runner.run(todo):
            store.write(unit, values, run_number)
            cells += unit.n_cells
            bar.update(1)
            rate = cells / max(time.perf_counter() - sweep_start, 1e-9)
            bar.set_postfix(cells_per_s=f"{rate:.0f}", refresh=False)
        bar.close()
        if iv.verify_top_k and store.verified() == 0 and (store.done() > 0).all():
            _verify_top_cells(runner, store, plan, spec, run_number)
        sweep_seconds = time.perf_counter() - sweep_start
        workers, restarts = runner.n_workers, runner.restarts
    finally:
        runner.close()
    return SweepSummary(
        path=path,
        units_total=len(plan.units),
        units_run=len(todo),
        cells_run=cells,
        seconds=time.perf_counter() - start,
        sweep_seconds=sweep_seconds,
        run_number=run_number,
        workers=workers,
        worker_restarts=restarts,
        engine=info.engine,
    )
