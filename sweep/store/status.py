"""Progress and health of any store, also one another process is writing.

    python -m sweep.status STORE [--verify]

Units done of each component, cells x prompts done, the runs and their dates, who holds
the store, the config's key lines. ``--verify`` reads every done unit's chunk, reports
damaged ones by their coordinates and marks them not done, so the next run of the sweep
command recomputes them. Torch-free.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
import zarr

from sweep.edges.graph import GraphShape, connects, receivers, senders
from sweep.errors import StoreBusyError, SweepError
from sweep.store.backends import backend_for
from sweep.store.layout import META, array, check_format, is_store, root_attrs
from sweep.store.lease import Lease, read_holder

KEY_LINES = ("model.name", "task.kind", "task.path", "task.n_prompts", "grid.components",
             "grid.receivers", "grid.senders", "grid.scores", "grid.file", "grid.sizes",
             "intervention.*", "metric.names")  # fmt: skip
"""The config lines the report shows; ``group.*``: every key of the group."""


@dataclass(frozen=True)
class Unit:
    index: int
    component: str
    layers: tuple[int, int]
    """Index range on the variable's lead axis (``layer``; ``receiver`` for edges)."""
    prompts: tuple[int, int]

    def where(self, lead: str, coords: list[Any]) -> str:
        lo, hi = self.layers
        ls = coords[lo:hi]
        return (
            f"{self.component} {lead}s {ls[0]}..{ls[-1]} prompts {self.prompts[0]}.."
            f"{self.prompts[1] - 1} (unit {self.index})"
        )


@dataclass
class StoreStatus:
    path: str
    units_done: dict[str, tuple[int, int]]
    """Component -> (done, total) units."""
    cell_prompts: tuple[int, int]
    """(done, total) cells x prompts."""
    runs: list[dict[str, Any]]
    holder: str | None
    config: dict[str, Any]
    what: str = "cells"
    """What the store's units compute: ``cells``, ``edges`` for an edge sweep, ``circuits``
    for a circuit sweep."""
    damaged: list[str] = field(default_factory=list)
    """Verify: damaged units by coordinates (now marked not done)."""
    verified: bool = False
    note: str = ""

    def report(self) -> str:
        done, total = self.cell_prompts
        lines = [f"store: {self.path}"]
        for name, (d, t) in self.units_done.items():
            lines.append(f"  {name}: {d} of {t} units done")
        pct = 100 * done / total if total else 100.0
        lines.append(f"{self.what} x prompts: {done:,} of {total:,} done ({pct:.1f}%)")
        held = self.holder or "nobody (no sweep is running on it)"
        lines.append(f"held by: {held}")
        for r in self.runs:
            lines.append(f"run {r.get('run')}: started {r.get('started')} by pid "
                         f"{r.get('pid')} on {r.get('host')}")  # fmt: skip
        lines += [f"{k}: {v}" for k, v in self.config.items()]
        if self.verified:
            if self.damaged:
                lines.append(f"damaged: {len(self.damaged)} unit(s), marked not done{self.note}:")
                lines += [f"  {d}" for d in self.damaged]
                lines.append("run the sweep's command again to recompute them")
            else:
                lines.append("verify: every done unit's chunk reads back")
        return "\n".join(lines)


def _cells_per_lead(group: zarr.Group, attrs: dict[str, Any], name: str) -> np.ndarray:
    """Cells of a variable per index of its lead axis: the product of its dims after
    (metric, layer); for edges, the senders each receiver reads (the rest stay NaN)."""
    arr = array(group, name)
    if "graph" not in attrs or "receiver" not in (arr.metadata.dimension_names or ()):  # type: ignore[union-attr]
        return np.full(arr.shape[1], math.prod(arr.shape[2:-1]))
    shape = GraphShape(**attrs["graph"])
    by_name = {n.name: n for n in receivers(shape) + senders(shape)}
    chosen = [by_name[str(s)] for s in np.asarray(array(group, "sender")[:])]
    reads = [by_name[str(r)] for r in np.asarray(array(group, "receiver")[:])]
    per_pair = math.prod(arr.shape[3:-1])  # positions, for edges one position at a time
    return np.array([per_pair * sum(connects(s, r, shape) for s in chosen) for r in reads])


def _units(group: zarr.Group, names: list[str]) -> list[Unit]:
    table = np.asarray(array(group, f"{META}/units")[:])
    return [
        Unit(i, names[int(c)], (int(a), int(b)), (int(p), int(q)))
        for i, (c, a, b, p, q) in enumerate(table)
    ]


def _runs(location: str) -> list[dict[str, Any]]:
    runs = zarr.open_group(location, path=META, mode="r").attrs.get("runs", [])
    return [dict(r) for r in runs] if isinstance(runs, list) else []


def _parse_config(text: str) -> dict[str, Any]:
    """The store's config (YAML text); empty where it cannot be read."""
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _setting(cfg: dict[str, Any], key: str) -> Any:
    group, _, name = key.partition(".")
    section = cfg.get(group)
    return section.get(name) if isinstance(section, dict) else None


def _lease_timeout(cfg: dict[str, Any]) -> float:
    """The store's own ``store.lease_timeout_s`` (a sweep on shared storage may renew its
    lease less often than the default)."""
    value = _setting(cfg, "store.lease_timeout_s")
    return float(value) if isinstance(value, (int, float)) and value > 0 else 120.0


def _config_lines(cfg: dict[str, Any]) -> dict[str, Any]:
    keys: list[str] = []
    for key in KEY_LINES:
        group, _, name = key.partition(".")
        section = cfg.get(group)
        if name == "*":
            keys += [f"{group}.{k}" for k in section] if isinstance(section, dict) else []
        else:
            keys.append(key)
    values = {key: _setting(cfg, key) for key in keys}
    return {k: v for k, v in values.items() if v is not None}


def done_marks(path: str | os.PathLike[str]) -> np.ndarray:
    """Each unit's done mark, in unit order: 0 not done, else the number of the run that
    wrote it; empty while the store does not exist yet. Cheap enough to watch a running
    sweep with (the status report counts from the same array)."""
    backend = backend_for(str(path))
    try:
        return np.asarray(array(zarr.open_group(backend.location, mode="r"), f"{META}/done")[:])
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return np.zeros(0, dtype=np.int32)


def status(path: str, verify: bool = False) -> StoreStatus:
    """The progress of the store at ``path``; ``verify`` also reads every chunk back."""
    backend = backend_for(str(path))
    backend.check_reachable()
    if not is_store(backend, key="STORE"):
        raise SweepError(f"STORE: {path}: no such store")
    check_format(backend)
    attrs = root_attrs(backend)
    cfg = _parse_config(str(attrs.get("config", "")))
    group = zarr.open_group(backend.location, mode="r")
    names = list(attrs.get("components", []))
    units = _units(group, names)
    done = np.asarray(array(group, f"{META}/done")[:])
    per = {n: [0, 0] for n in names}
    cells_done = cells_total = 0
    per_lead = {n: _cells_per_lead(group, attrs, n) for n in names}
    for u in units:
        # cells (edges) x prompts, as the progress bar counts them
        size = int(per_lead[u.component][slice(*u.layers)].sum())
        size *= u.prompts[1] - u.prompts[0]
        per[u.component][1] += 1
        cells_total += size
        if done[u.index]:
            per[u.component][0] += 1
            cells_done += size
    holder = read_holder(backend)
    out = StoreStatus(
        path=str(path),
        units_done={n: (d, t) for n, (d, t) in per.items()},
        cell_prompts=(cells_done, cells_total),
        runs=_runs(backend.location),
        holder=holder.describe() if holder is not None else None,
        config=_config_lines(cfg),
        what="circuits" if "circuit" in attrs else "edges" if "graph" in attrs else "cells",
    )
    if verify:
        _verify(out, backend, group, units, done, _lease_timeout(cfg))
    return out


def _verify(
    out: StoreStatus,
    backend: Any,
    group: zarr.Group,
    units: list[Unit],
    done: Any,
    lease_timeout_s: float,
) -> None:
    present = {n: backend.files(n) for n in out.units_done}
    bad = []
    for u in units:
        if not done[u.index]:
            continue
        arr = array(group, u.component)
        key = _chunk_key(arr, u)
        ok = key in present[u.component]
        if ok:
            try:
                arr[(slice(None), slice(*u.layers), *(slice(None),) * (arr.ndim - 3),
                     slice(*u.prompts))]  # fmt: skip
            except Exception:  # any decode error: the chunk's bytes are damaged
                ok = False
        if not ok:
            bad.append(u)
    out.verified = True
    out.damaged = [u.where(*_lead(group, u.component)) for u in bad]
    if bad:
        lease = Lease(backend, lease_timeout_s)
        try:
            lease.acquire()
        except StoreBusyError:
            out.note = " NOT marked: a sweep holds the store; verify again when it ends"
            return
        try:
            writable = zarr.open_group(backend.location, mode="r+")
            for u in bad:
                array(writable, f"{META}/done")[u.index] = 0
        finally:
            lease.release()


def _lead(group: zarr.Group, name: str) -> tuple[str, list[Any]]:
    """A variable's lead dim (``layer``, or ``receiver`` for edges) and its coordinate."""
    lead = str(array(group, name).metadata.dimension_names[1])  # type: ignore[union-attr,index]
    return lead, np.asarray(array(group, lead)[:]).tolist()


def _chunk_key(arr: zarr.Array, u: Unit) -> str:
    chunks = arr.chunks
    index = [0, u.layers[0] // chunks[1], *(0,) * (arr.ndim - 3), u.prompts[0] // chunks[-1]]
    return "c/" + "/".join(map(str, index))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sweep.status", description=__doc__.split("\n")[0])
    p.add_argument("store")
    p.add_argument("--verify", action="store_true", help="read every chunk; mark damaged units")
    args = p.parse_args(argv)
    try:
        result = status(args.store, verify=args.verify)
    except SweepError as e:
        print(f"patchsweep: error: {e}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    try:
        print(result.report(), flush=True)  # noqa: T201
    except BrokenPipeError:  # `... | head` closed the pipe: what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if result.damaged:
        sys.exit(1)
