"""The driver: config -> spec -> plan -> runner -> store. ``sweep.run`` is the Python entry.

The store is checked and its lease taken before any model loads, so a second driver, a
store of another config or a path that is not a store fail in a second. The driver is the
only writer: each unit's chunk as it arrives, then its done mark.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from sweep import config, interrupts
from sweep.engine.budget import CACHE_SHARE, max_prompt_block, prompt_block
from sweep.errors import ConfigError, Interrupted, StoreError
from sweep.plan import BYTES_PER_VALUE, ExactJob, Plan, TaskInfo, WorkUnit, make_plan
from sweep.results.analysis import cell_of, top_cells, top_edges
from sweep.runners.base import Runner, WorkerFactory, default_worker
from sweep.runners.choose import make_runner
from sweep.spec import SweepSpec, fingerprint
from sweep.store.backends import object_store_error
from sweep.store.layout import Location, StoreMeta, root_attrs
from sweep.store.opening import SweepStore
from sweep.store.read import open_dataset
from sweep.store.writer import ResultStore

log = logging.getLogger(__name__)


conf_dir = config.conf_dir


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config ``python -m sweep OVERRIDES`` would run, without Hydra's run directory.
    A circuit sweep (``grid=circuit``) takes its model, task, metrics and ablation from its
    scores store, as ``python -m sweep.circuit`` does (``sweep.circuit_config.compose_circuit``)."""
    overrides = list(overrides or [])
    if "grid=circuit" in overrides:
        from sweep.circuit_config import compose_circuit

        cfg, notes = compose_circuit(overrides)
        for note in notes:
            log.warning("%s", note)
        return cfg
    return config.compose(overrides)


@dataclass(frozen=True, slots=True)
class SweepSummary:
    path: Location
    """The store: a local Path, or the fsspec URL given as store.path."""
    units_total: int
    units_run: int
    """Units computed by this run (the rest were done by earlier runs)."""
    units_lost: int
    """Units marked done whose chunk file was missing: recomputed by this run."""
    cells_run: int
    """Cells (an edge sweep: edges) computed by this run, each over its prompts."""
    seconds: float
    """Wall time of the whole run, model loading included."""
    sweep_seconds: float
    """Wall time from the first unit sent to the last result written."""
    run_number: int
    workers: int
    worker_restarts: int
    engine: str
    """The patched forward the workers used: ``fast`` or ``hooks``."""
    prompt_block: int = 0
    cache_builds: tuple[int, ...] = ()
    """Prompt blocks whose runs each worker built (once per block when affinity works)."""
    edges: bool = False
    """An edge sweep (``grid=edges``): ``cells_run`` counts edges."""
    circuits: bool = False
    """A circuit sweep (``grid=circuit``): ``cells_run`` counts circuits."""
    worker_nodes: tuple[str, ...] = ()
    """The node each Ray worker ran on last (empty in-process)."""
    workers_lost: int = 0
    """Workers lost with their node, replaced on live nodes (part of ``worker_restarts``)."""
    jobs_requeued: int = 0
    """Units (and verification jobs) sent again because their worker died holding them."""


def run(overrides: list[str] | None = None) -> Location:
    """Run or resume the sweep the overrides describe; returns the store path."""
    return run_config(compose_config(overrides)).path


def run_config(cfg: DictConfig, make_worker: WorkerFactory = default_worker) -> SweepSummary:
    spec = config.to_spec(cfg)
    return run_spec(spec, OmegaConf.to_yaml(cfg, resolve=True), make_worker)


def run_spec(
    spec: SweepSpec, config_yaml: str, make_worker: WorkerFactory = default_worker
) -> SweepSummary:
    start = time.perf_counter()
    progress = _Progress()
    door = SweepStore(spec.store.path, spec.store.lease_timeout_s, spec.store.overwrite)
    try:
        with interrupts.catching(), door:
            door.enter(fingerprint(spec))  # before the model loads: a second driver fails at once
            runner = make_runner(spec, make_worker)
            try:
                return _sweep(spec, config_yaml, door, runner, progress, start)
            finally:
                runner.close()
    except interrupts.Signalled as e:
        raise Interrupted(progress.message(), e.exit_code) from None
    except Exception as e:  # a full disk; an object store lost mid-sweep (botocore's errors)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(progress.disk_full(str(door.backend.path))) from None
        if (message := object_store_error(e, door.backend.location)) is None:
            raise
        raise StoreError(message) from None


@dataclass
class _Progress:
    """What an interruption reports: units done of the total, once a store exists."""

    done: int = 0
    total: int = 0

    left_bytes: int = 0
    """Uncompressed bytes of the units not written yet (the store's remaining chunks)."""

    def disk_full(self, path: str) -> str:
        left = self.total - self.done
        # Each chunk is a file: a small one still takes a filesystem block (4 KiB).
        size = max(self.left_bytes, left * 4096)
        amount = f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"
        need = f"about {amount} more ({left} chunk files, estimated before compression)"
        where = f"the disk (or quota) under store.path {path} is full"
        if not self.total:
            return f"{where} before the store was made; free space and run the same command"
        return (
            f"{where}: {self.done} of {self.total} units are written, the rest need {need}; "
            "free space and run the same command to resume"
        )

    def message(self) -> str:
        if not self.total:
            return "interrupted before the store was created; nothing was written"
        return (
            f"interrupted: {self.done} of {self.total} units done; run the same command to resume"
        )


def _unit_bytes(unit: WorkUnit, plan: Plan) -> int:
    return unit.n_cells * unit.n_prompts * len(plan.metrics) * BYTES_PER_VALUE


def _sweep(
    spec: SweepSpec,
    config_yaml: str,
    door: SweepStore,
    runner: Runner,
    progress: _Progress,
    start: float,
) -> SweepSummary:
    info = runner.describe()
    iv = spec.intervention
    meta = StoreMeta(
        config_yaml,
        fingerprint(spec),
        spec.model.name,
        intervention=iv.kind,
        base_run=spec.intervention.base_run,
        exact=getattr(iv, "verify_top_k", 0) > 0,
        intervention_keys=_keys(iv),
    )
    store, plan = door.open(lambda: _plan(spec, info, door), info, meta)
    run_number = store.begin_run()
    todo, lost = store.todo(plan)
    if lost:
        log.warning("%d done unit(s) had lost their chunk file; recomputing them", len(lost))
    progress.total, progress.done = len(plan.units), len(plan.units) - len(todo)
    log.info(
        "%d of %d units to compute, %d done earlier; %d prompts per block",
        len(todo), progress.total, progress.done, plan.prompt_block,
    )  # fmt: skip
    todo.sort(key=lambda u: (u.prompt_start, u.index))  # a block's units one after another
    work = sum(plan.n_cells(u) * u.n_prompts for u in todo)
    what = " edge-prompts" if plan.is_edges else " cell-prompts"
    if plan.axes.ranking is not None:
        what = " circuit-prompts"
    bar = tqdm(total=work, unit=what, unit_scale=True, desc="sweep",
               disable=not spec.runner.progress, smoothing=0.1)  # fmt: skip
    cells, sweep_start = 0, time.perf_counter()
    progress.left_bytes = sum(_unit_bytes(u, plan) for u in todo)
    for unit, result in runner.run(todo):
        with interrupts.deferred():  # a chunk and its done mark are written together
            store.write(unit, result.values, result.block, run_number)
            progress.done += 1
            progress.left_bytes -= _unit_bytes(unit, plan)
        cells += plan.n_cells(unit)
        bar.update(plan.n_cells(unit) * unit.n_prompts)
    bar.close()
    if plan.axes.ranking is not None and (store.done() > 0).all():
        if todo or "curve_scores" not in root_attrs(door.backend):  # else: recorded already
            _record_curve(store, plan)
    k = getattr(iv, "verify_top_k", 0)
    if k and store.verified() == 0 and (store.done() > 0).all():
        verify = _verify_top_edges if plan.is_edges else _verify_top_cells
        verify(runner, store, plan, k, run_number)
    stats = runner.stats
    return SweepSummary(
        path=door.backend.path,
        units_total=len(plan.units),
        units_run=len(todo),
        units_lost=len(lost),
        cells_run=cells,
        seconds=time.perf_counter() - start,
        sweep_seconds=time.perf_counter() - sweep_start,
        run_number=run_number,
        workers=stats.workers,
        worker_restarts=stats.restarts,
        engine=info.engine,
        prompt_block=plan.prompt_block,
        cache_builds=stats.cache_builds,
        edges=plan.is_edges,
        circuits=plan.axes.ranking is not None,
        worker_nodes=stats.nodes,
        workers_lost=stats.lost,
        jobs_requeued=stats.requeued,
    )


def _record_curve(store: ResultStore, plan: Plan) -> None:
    """A finished circuit store's CPR and CMD per metric, as ``attrs["curve_scores"]``
    (``sweep.analysis.curve_scores`` computes them from the values any time)."""
    from sweep.results.faithfulness import curve_scores

    ds = open_dataset(store.path, load=[c.name for c in plan.components])  # small
    scores = {m: curve_scores(ds, m) for m in plan.metrics}
    store.record("curve_scores", {m: s.as_dict() for m, s in scores.items() if s is not None})


def _plan(spec: SweepSpec, info: TaskInfo, door: SweepStore) -> Plan:
    """The work units: on a resumed store's prompt blocks (and a circuit store's sizes,
    first; a latents store's latents, which ``top:N`` may pick otherwise here)."""
    shape, have = info.shape, door.latents()
    chosen = getattr(spec.grid, "latents", None)
    if have and have != shape.top_latents and isinstance(chosen, str):
        log.warning("grid.latents=%s picks other latents here than when the store was made; "
                    "resuming with the store's: %s", chosen, list(have))  # fmt: skip
        shape = dataclasses.replace(shape, top_latents=have)
    return make_plan(
        spec.grid, shape, info.seq_len, info.n_prompts, spec.metrics,
        spec.store.chunk_bytes, _prompt_block(spec, info, door.prompt_block()), info.position_names,
        door.sizes(), spec.intervention.kind == "eap",
    )  # fmt: skip


def _keys(spec: Any) -> dict[str, Any]:
    """A spec's keys and values, as JSON attributes hold them."""
    plain = (str, int, float, bool, type(None))
    out = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        out[f.name] = value if isinstance(value, plain) else str(value)
    return out


def _prompt_block(spec: SweepSpec, info: TaskInfo, have: int | None) -> int:
    """Prompts per block: the store's own when resuming, else ``store.prompt_block``, else
    as many as ``runner.memory_mb`` holds. A block that cannot fit is refused."""
    memory = spec.runner.memory_mb
    fits = max_prompt_block(memory, info.block_bytes, info.row_bytes)
    chosen = spec.store.prompt_block
    if chosen is not None:  # a block larger than the task is the task
        chosen = min(chosen, info.n_prompts)
    if have is not None:
        if chosen is not None and chosen != have:
            raise ConfigError(
                f"store.prompt_block: the store was made with {have} prompts per block, "
                f"this run asks for {chosen}; leave it out to resume, or choose another "
                "store.path"
            )
        return have
    if chosen is None:
        return prompt_block(memory, info.block_bytes, info.row_bytes, info.n_prompts)
    if chosen > fits:
        need = chosen * max(info.block_bytes / CACHE_SHARE, info.row_bytes / (1 - CACHE_SHARE))
        raise ConfigError(
            f"store.prompt_block: {chosen} prompts per block need about {need / 2**20:.0f} MB, "
            f"more than runner.memory_mb={memory:g} holds (at most {fits} prompts); lower it, "
            "leave it out, or raise runner.memory_mb"
        )
    return chosen


def _verify_top_edges(runner: Runner, store: ResultStore, plan: Plan, k: int, run: int) -> None:
    """EAP: patch the K edges with the largest estimated effect exactly (the exact edge
    forward), into ``edges_exact``; one job per prompt block, queued like units."""
    top = top_edges(open_dataset(store.path), k)
    log.info("EAP: verifying the top %d edges by exact edge patching", len(top))
    into = [n.name for n in plan.axes.nodes("receiver")]
    out_of = [n.name for n in plan.axes.nodes("sender")]
    at = ["pos"] if "pos" in top else []
    cells = [{"receiver": r["receiver"], "sender": r["sender"], **{d: r[d] for d in at}}
             for _, r in top.iterrows()]  # fmt: skip
    coords = tuple(
        (into.index(c["receiver"]), out_of.index(c["sender"]),
         *(plan.axes.code("pos", c["pos"]) for _ in at))
        for c in cells
    )  # fmt: skip
    name = plan.components[0].name
    jobs = [ExactJob(name, 0, coords, a, b) for a, b in plan.prompt_blocks]
    for job, values in runner.exact(jobs):
        store.write_cells(f"{name}_exact", cells, values, slice(job.prompt_start, job.prompt_stop))
    store.mark_verified(run)


def _verify_top_cells(runner: Runner, store: ResultStore, plan: Plan, k: int, run: int) -> None:
    """AtP: patch the K cells with the largest estimated effect exactly, into ``*_exact``;
    jobs (one per component, layer and prompt block) are queued on the workers like units."""
    top = top_cells(open_dataset(store.path), k)
    log.info("AtP: verifying the top %d cells by exact patching", len(top))
    cells: dict[tuple[str, int], list[dict[str, int | str]]] = {}
    for _, row in top.iterrows():
        where = cell_of(row)
        cells.setdefault((str(row["component"]), int(where["layer"])), []).append(where)
    jobs = []
    for (name, layer), group in cells.items():
        dims = plan.components[[c.name for c in plan.components].index(name)].dims
        coords = tuple(tuple(plan.axes.code(d, w[d]) for d in dims) for w in group)
        jobs += [ExactJob(name, layer, coords, a, b) for a, b in plan.prompt_blocks]
    for job, values in runner.exact(jobs):
        store.write_cells(f"{job.component}_exact", cells[(job.component, job.layer)], values,
                          slice(job.prompt_start, job.prompt_stop))  # fmt: skip
    store.mark_verified(run)
