"""The results store: a zarr group that ``xarray.open_zarr`` reads directly.

Only this module writes zarr. The driver creates the store once (coordinates, NaN-filled
arrays, baselines, attrs, the table of work units); afterwards each finished unit writes
exactly one chunk, and only then is it marked done in ``_patchsweep/done`` (a subgroup
xarray does not show). A kill between the two costs one recomputation, never a wrong
value; a done unit whose chunk file went missing is found by a listing on resume.

Torch-free: opening, checking and reporting on a store need no model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import socket
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.sync import sync

from sweep.errors import StoreDamagedError, StoreError, StoreMismatchError
from sweep.plan import (
    NAMED,
    PROMPT_IDS,
    PROMPT_TEXTS,
    SIZE_COORDS,
    BlockData,
    Plan,
    TaskInfo,
    WorkUnit,
    resolve_positions,
    size_coords,
)
from sweep.results.backends import Backend, backend_for
from sweep.results.lease import LEASE, Lease, read_holder

FORMAT = 2
"""Version of the store layout; a store of a newer format is refused, not misread."""
FORMAT_ATTR = "patchsweep_format"
FINGERPRINT = "patchsweep_fingerprint"
META = "_patchsweep"

Location = Path | str
"""A local directory (resolved Path) or an fsspec URL."""


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """What the store records about the config that produced it."""

    config_yaml: str
    """The whole resolved config, for people."""
    fingerprint: dict[str, Any]
    """Everything that changes results, compared on resume."""
    model: str
    intervention: str
    base_run: str
    """The run the intervention changed: ``corrupted`` (denoise) or ``clean``."""
    exact: bool = False
    """Also hold ``{component}_exact`` (AtP: exact values of the verified cells)."""
    intervention_keys: dict[str, Any] = field(default_factory=dict)
    """Every key of the intervention (``direction``, ``samples``, ...), for people."""


# ---------------------------------------------------------------------------- what is at store.path


def root_attrs(backend: Backend) -> dict[str, Any]:
    """The root group's attributes; a damaged ``zarr.json`` is named, not a traceback."""
    meta = _metadata(backend, "zarr.json")
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else {}


def _metadata(backend: Backend, rel: str) -> dict[str, Any]:
    try:
        meta = json.loads(backend.read(rel))
    except FileNotFoundError:
        raise StoreDamagedError(f"{_join(backend, rel)}: missing; the store is damaged") from None
    except OSError as e:
        raise StoreError(f"{_join(backend, rel)}: cannot read it ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError):
        raise StoreDamagedError(
            f"{_join(backend, rel)}: damaged metadata (not valid JSON); restore it from a "
            "copy, or delete the store and run the sweep again"
        ) from None
    if not isinstance(meta, dict):
        raise StoreDamagedError(f"{_join(backend, rel)}: damaged metadata (not a JSON object)")
    return meta


def _join(backend: Backend, rel: str) -> str:
    return f"{backend.location.rstrip('/')}/{rel}"


def is_store(backend: Backend, key: str = "store.path") -> bool:
    """Whether ``backend`` holds a patchsweep store; anything else there (a file, a folder
    of other things, a damaged store) is refused, naming ``key``, and left as it is."""
    choose = "choose another store.path" if key == "store.path" else "give a patchsweep store"
    if not backend.exists():
        return False
    if not backend.is_dir():
        raise StoreError(f"{key}: {backend} is a file, not a store; {choose} (nothing was changed)")
    if not backend.exists("zarr.json"):
        if not backend.entries():
            return False  # an empty directory: nothing to lose, a store can go there
        holder = read_holder(backend)
        if holder is not None:  # a store being created in place by another driver
            return True
        raise StoreError(
            f"{key}: {backend} exists and is not a patchsweep store "
            f"(it holds {_some(backend.entries())}); {choose} (nothing was changed)"
        )
    attrs = root_attrs(backend)
    if FORMAT_ATTR not in attrs and FINGERPRINT not in attrs:
        raise StoreError(
            f"{key}: {backend} is a zarr group, but not a patchsweep store; {choose} "
            "(nothing was changed)"
        )
    return True


def _some(names: list[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_format(backend: Backend) -> None:
    fmt = root_attrs(backend).get(FORMAT_ATTR, 1)
    if fmt > FORMAT:
        raise StoreError(
            f"store.path: {backend} was written by a newer patchsweep (store format {fmt}; "
            f"this one reads {FORMAT}); upgrade patchsweep, or choose another store.path"
        )
    if fmt < FORMAT:
        raise StoreMismatchError(
            f"store.path: {backend} was written by an older patchsweep (store format {fmt}); "
            "resume it with that version, choose another store.path, or pass "
            "store.overwrite=true to replace it"
        )


def fingerprint_of(backend: Backend) -> dict[str, Any] | None:
    fp = root_attrs(backend).get(FINGERPRINT)
    return json.loads(fp) if isinstance(fp, str) else None


def check_same(backend: Backend, want: dict[str, Any]) -> None:
    """Refuse a store whose results came from another config, listing what differs."""
    check_format(backend)
    have = fingerprint_of(backend)
    if have is None:
        raise StoreMismatchError(
            f"store.path: {backend} is a patchsweep store whose creation never finished; "
            "pass store.overwrite=true to replace it, or choose another store.path"
        )
    diffs = _diff(have, want)
    if diffs:
        listed = "; ".join(_differs(k, a, b) for k, a, b in diffs)
        raise StoreMismatchError(
            f"store.path: {backend} was written by a different config ({listed}). Use "
            "another store.path to keep both, run with the store's values to resume it, "
            "or pass store.overwrite=true to replace it"
        )


def _differs(key: str, have: Any, want: Any) -> str:
    if key == "task.examples":  # a digest of the prompts as read: say what it means
        return (
            "task.path: the prompts read from the task file differ from those the store was "
            f"made with (the file changed since, or is another file; digest {str(have)[:12]} "
            f"vs {str(want)[:12]})"
        )
    return f"{key}: store has {have!r}, this run has {want!r}"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _diff(have: dict[str, Any], want: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    a, b = _flatten(have), _flatten(want)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_only_store(backend: Backend) -> None:
    """Before deleting a store: everything at the root must be part of it."""
    children = root_attrs(backend).get("patchsweep_members")
    if not isinstance(children, list):
        meta = _metadata(backend, "zarr.json").get("consolidated_metadata") or {}
        children = [k for k in (meta.get("metadata") or {}) if "/" not in k]
    own = {"zarr.json", META, *children}
    foreign = [e for e in backend.entries() if e not in own]
    if foreign:
        raise StoreError(
            f"store.path: {backend} holds files that are not part of the store "
            f"({_some(foreign)}); store.overwrite only deletes a patchsweep store: move them "
            "or choose another store.path (nothing was changed)"
        )


# ---------------------------------------------------------------------------- creation


def create(
    backend: Backend, plan: Plan, info: TaskInfo, meta: StoreMeta, lease: Lease, replace: bool
) -> None:
    """Create the store (``replace``: in place of the one whose lease ``lease`` holds).

    Local: built in a temporary directory with the lease inside, renamed into place. Object
    stores: the lease is taken first, the store built in place, the fingerprint written last.
    """
    local = backend.builds_aside
    if not local and not replace:
        # The lease's folder is a zarr group first, so zarr never meets a stray file.
        zarr.open_group(backend.location, path=META, mode="a")
        lease.acquire()

    def populate(target: str) -> None:
        zarr.open_group(target, path=META, mode="a")  # holds the lease: a group first
        _populate(target, plan, info, meta)
        if local:
            Path(target, LEASE).write_bytes(lease.data())
        _finish(target, meta)

    try:
        backend.create(populate, replace)
    except FileExistsError:
        raise StoreError(
            f"store.path: {backend} was created by another sweep just now; run the command "
            "again to resume it once that sweep holds it, or choose another store.path"
        ) from None
    except PermissionError as e:
        raise StoreError(
            f"store.path: cannot write {backend} ({e.strerror}); choose a writable store.path"
        ) from None
    if local and not replace:
        lease.adopt()


RANK_COORDS = ("circuit_sender", "circuit_receiver", "circuit_score", "circuit_scaled")
"""A circuit store's ranking along ``rank``: each edge, best first, its score (the mean
effect on the rank metric) and that score on the scores store's own scale."""

PER_POSITION = (
    ("clean_token", str, ""),
    ("corrupted_token", str, ""),
    ("position_name", str, ""),
    ("position_index", "int64", -1),
)
"""Coordinates along (prompt, pos), written block by block: the tokens at each position,
the name of the position in the prompt (IOI's ``S1``, ``IO``...; '' for none), and its
token index in the prompt (-1 where the prompt has no such position)."""


@dataclass(frozen=True)
class _Node:
    """An array of a new store: its shape, chunks, dtype, fill and named dims, and the
    values it starts with (None: only its fill)."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: Any
    fill: Any
    dims: tuple[str, ...]
    values: np.ndarray | None = None


def _nan_array(shape: tuple[int, ...], chunks: tuple[int, ...], dims: list[str]) -> _Node:
    return _Node(shape, chunks, "float32", np.nan, tuple(dims))


def _populate(target: str, plan: Plan, info: TaskInfo, meta: StoreMeta) -> None:
    coords = _coordinates(plan, info, meta)
    nodes = {str(name): _coordinate(var) for name, var in coords.variables.items()}
    n, block, width = plan.n_prompts, plan.prompt_block, len(plan.axes.coords["pos"])
    metrics = len(plan.metrics)
    for run in ("clean", "corrupted"):
        # Filled block by block as units arrive (BlockData): no pass over every prompt first.
        nodes[f"{run}_baseline"] = _nan_array((metrics, n), (metrics, block), ["metric", "prompt"])
    for name, dtype, fill in PER_POSITION:
        nodes[name] = _Node((n, width), (block, width), dtype, fill, ("prompt", "pos"))
    for name in PROMPT_TEXTS:  # the task's own strings, block by block like the tokens
        nodes[name] = _Node((n,), (block,), str, "", ("prompt",))
    for name in PROMPT_IDS:
        nodes[name] = _Node((n,), (block,), "int64", -1, ("prompt",))
    for c in plan.components:
        dims = ["metric", c.lead, *c.dims, "prompt"]
        nodes[c.name] = _nan_array(plan.shape(c), plan.chunks(c), dims)
        if meta.exact:
            nodes[f"{c.name}_exact"] = _nan_array(plan.shape(c), (*plan.shape(c)[:-1], block), dims)
    members = sorted(nodes)
    units, blocks = len(plan.units), len(plan.prompt_blocks)
    for name, size in (("done", units), ("blocks", blocks), ("verified", 1)):
        nodes[f"{META}/{name}"] = _Node((size,), (size,), "int32", 0, ())
    nodes[f"{META}/units"] = _Node((units, 5), (units, 5), "int32", 0, (), _unit_rows(plan))
    group = zarr.open_group(target, mode="r+")
    _create(group, nodes)
    ranks = (*RANK_COORDS, *SIZE_COORDS) if plan.axes.ranking is not None else ()
    coordinates = ["prompt_length", *(name for name, _, _ in PER_POSITION), *PROMPT_TEXTS,
                   *PROMPT_IDS, *_node_coords(plan), *ranks]  # fmt: skip
    group.update_attributes(
        {**coords.attrs, "coordinates": " ".join(coordinates), "patchsweep_members": members}
    )
    zarr.open_group(target, path=META, mode="r+").update_attributes({"runs": []})


def _coordinate(var: xr.Variable) -> _Node:
    """A coordinate as ``to_zarr`` writes it: one chunk; strings filled with '', integers
    with 0, floats with NaN."""
    values = var.values
    kind = values.dtype.kind
    dtype, fill = (str, "") if kind in "OUS" else (values.dtype, np.nan if kind == "f" else 0)
    chunks = tuple(max(1, n) for n in values.shape)
    return _Node(values.shape, chunks, dtype, fill, tuple(map(str, var.dims)), values)


@functools.cache
def _template(dtype: Any) -> Any:
    """Zarr's metadata of a ``dtype`` array with its default codecs, made in memory once."""
    return zarr.create_array(store={}, shape=(1,), dtype=dtype).metadata


def _create(group: zarr.Group, nodes: dict[str, _Node]) -> None:
    """Every array in one call (zarr then writes their metadata together, where one
    ``create_array`` each would check and rewrite the parent group every time), then the
    starting values."""
    metadata = {
        name: dataclasses.replace(
            _template(np.dtype(node.dtype) if node.dtype is not str else str),
            shape=node.shape,
            chunk_grid=RegularChunkGrid(chunk_shape=node.chunks),
            fill_value=node.fill,
            dimension_names=node.dims or None,
        )
        for name, node in nodes.items()
    }
    made = dict(group.create_hierarchy(metadata))
    _write_all([
        (made[name], ..., node.values)
        for name, node in nodes.items()
        if node.values is not None and node.values.size and isinstance(made[name], zarr.Array)
    ])  # fmt: skip


def _write_all(writes: list[tuple[Any, Any, Any]]) -> None:
    """Regions of several arrays (array, selection, values) written together: one trip to
    zarr's I/O loop, where each ``array[selection] = values`` makes one of its own (a new
    store writes some fifteen small coordinates, a prompt block a dozen). Every write has
    finished when it returns."""

    async def every() -> None:
        await asyncio.gather(*(a._async_array.setitem(where, v) for a, where, v in writes))

    if writes:
        sync(every())


def _unit_rows(plan: Plan) -> np.ndarray:
    """[unit, 5] each unit's variable, lead-dim range and prompt range (``sweep.status``)."""
    names = [c.name for c in plan.components]
    rows = [
        (names.index(u.component), u.layer_start, u.layer_start + len(u.layers))
        + (u.prompt_start, u.prompt_stop)
        for u in plan.units
    ]
    return np.array(rows, dtype=np.int32).reshape(len(plan.units), 5)


def _consolidate(target: str) -> None:
    with warnings.catch_warnings():
        # Consolidated metadata is not in the zarr v3 spec yet; xarray reads it quietly.
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(target)


def check_units(backend: Backend, plan: Plan) -> None:
    """Refuse to resume a store whose work units another planner laid out (its chunks are
    other blocks than this run's units would write)."""
    meta = zarr.open_group(backend.location, path=META, mode="r", use_consolidated=False)
    have = np.asarray(array(meta, "units")[:])
    if have.shape != (len(plan.units), 5) or not (have == _unit_rows(plan)).all():
        raise StoreMismatchError(
            f"store.path: {backend} was laid out in other work units than this version of "
            "patchsweep plans for the same config (another version made it); resume it with "
            "that version, choose another store.path, or pass store.overwrite=true to "
            "replace it"
        )


def store_sizes(backend: Backend) -> tuple[int, ...]:
    """A circuit store's sizes, in its order (others: none)."""
    group = zarr.open_group(backend.location, mode="r")
    return tuple(int(x) for x in np.asarray(array(group, "size")[:])) if "size" in group else ()


def grow(backend: Backend, plan: Plan, config_yaml: str) -> bool:
    """Add the sizes a circuit plan has beyond the store's (which come first, in its
    order): the circuit variable, its ``size`` coordinates, the done and unit tables grow
    at their ends. Readers see the store through its consolidated metadata, written last,
    so they see it before or after, never half grown; a crash before that is finished by
    the next run, which grows it again to the same shapes."""
    sizes = plan.axes.coords["size"]
    group = zarr.open_group(backend.location, mode="r+", use_consolidated=False)
    have = np.asarray(array(group, "size")[:])
    if len(sizes) == len(have):
        if not _metadata(backend, "zarr.json").get("consolidated_metadata"):
            _consolidate(backend.location)  # a run that grew it was killed before this
        return False
    stored = np.asarray(array(group, "size_threshold")[:])
    for c in plan.components:
        array(group, c.name).resize(plan.shape(c))
    coords = size_coords(plan.axes)
    # Thresholds that picked sizes in earlier runs keep their labels.
    old = coords["size_threshold"][: len(stored)]
    coords["size_threshold"][: len(stored)] = np.where(np.isnan(old), stored, old)
    for name, values in {"size": np.array(sizes, dtype=np.int64), **coords}.items():
        arr = array(group, name)
        arr.resize((len(sizes),))
        arr[:] = values
    meta = zarr.open_group(backend.location, path=META, mode="r+", use_consolidated=False)
    array(meta, "done").resize((len(plan.units),))
    table = array(meta, "units")
    table.resize((len(plan.units), 5))
    table[:] = _unit_rows(plan)
    group.attrs["config"] = config_yaml  # what the store now holds was asked for by this run
    _consolidate(backend.location)
    return True


def _finish(target: str, meta: StoreMeta) -> None:
    group = zarr.open_group(target, mode="r+")
    group.attrs[FINGERPRINT] = json.dumps(meta.fingerprint, sort_keys=True)  # last: complete
    _consolidate(target)


def _labels(plan: Plan, dim: str) -> np.ndarray:
    """A grid dim's coordinate: integers, or names (named positions, graph nodes)."""
    named = (dim == "pos" and plan.axes.named) or dim in ("receiver", "sender")
    return np.array(plan.axes.labels(dim), dtype=object if named else np.int64)


def _node_coords(plan: Plan) -> dict[str, tuple[str, np.ndarray]]:
    """An edge sweep's receivers and senders: each one's layer (-1: the embedding; the
    model's layer count: the logits), kind and head (-1: none) beside its name."""
    if plan.axes.graph is None or "receiver" not in plan.axes.coords:
        return {}  # not an edge sweep
    out = {}
    for dim in ("receiver", "sender"):
        nodes = [plan.axes.nodes(dim)[i] for i in plan.axes.coords[dim]]
        out[f"{dim}_layer"] = (dim, np.array([n.layer for n in nodes], dtype=np.int64))
        out[f"{dim}_kind"] = (dim, np.array([n.kind for n in nodes], dtype=object))
        out[f"{dim}_head"] = (dim, np.array([n.head for n in nodes], dtype=np.int64))
    return out


def _coordinates(plan: Plan, info: TaskInfo, meta: StoreMeta) -> xr.Dataset:
    used = {d for c in plan.components for d in (c.lead, *c.dims)}
    ds = xr.Dataset(
        coords={
            "metric": np.array(plan.metrics, dtype=object),
            **({"layer": np.array(plan.axes.layers, dtype=np.int64)} if "layer" in used else {}),
            **{
                d: _labels(plan, d)
                for d in plan.axes.coords
                if d == "pos" or (d == "head" and not plan.is_edges) or d in used
            },
            **_node_coords(plan),
            "prompt": np.arange(plan.n_prompts, dtype=np.int64),
            "prompt_length": ("prompt", np.array(info.lengths, dtype=np.int64)),
        },
    )
    if plan.axes.graph is not None:
        ds.attrs["graph"] = dataclasses.asdict(plan.axes.graph)
        if info.shape.d_model:
            ds.attrs["d_model"] = info.shape.d_model
    if plan.axes.receivers:
        ds.attrs["path_receivers"] = list(plan.axes.receivers)
    if plan.axes.ranking is not None:  # a circuit sweep's edges, best first
        r = plan.axes.ranking
        scaled = list(r.scaled) if r.scaled else [np.nan] * len(r.edges)
        columns = ([e[0] for e in r.edges], [e[1] for e in r.edges], list(r.scores), scaled)
        types = (object, object, np.float64, np.float64)
        ds = ds.assign_coords({
            name: ("rank", np.array(values, dtype=t))
            for name, values, t in zip(RANK_COORDS, columns, types, strict=True)
        } | {name: ("size", v) for name, v in size_coords(plan.axes).items()})  # fmt: skip
        ds.attrs["circuit"] = {"method": r.method, "source": r.source, "metric": r.metric,
                               "scored": r.scored, "order": r.order,
                               "prune": plan.axes.prune}  # fmt: skip
    ds.attrs.update(
        config=meta.config_yaml,
        model=meta.model,
        patchsweep_version=info.versions["patchsweep"],
        transformer_lens_version=info.versions["transformer_lens"],
        components=[c.name for c in plan.components],
        intervention=meta.intervention,
        intervention_keys=meta.intervention_keys,
        base_run=meta.base_run,
        prompt_block=plan.prompt_block,
        position_names=list(plan.axes.position_names),
        engine=info.engine,
        **{FORMAT_ATTR: FORMAT},
    )
    return ds


# ---------------------------------------------------------------------------- an open store


class ResultStore:
    """A store this driver holds the lease of: it writes units and cells into it."""

    def __init__(self, backend: Backend, lease: Lease) -> None:
        self.backend = backend
        self.lease = lease
        self.path = backend.path
        self.group = zarr.open_group(backend.location, mode="r+")
        self.prompt_block = int(root_attrs(backend)["prompt_block"])
        names = list(root_attrs(backend).get("position_names", []))
        labels = np.asarray(array(self.group, "pos")[:])
        self.positions = np.array(
            [NAMED + names.index(str(p)) if labels.dtype.kind in "OUT" else int(p) for p in labels],
            dtype=np.int64,
        )
        """The ``pos`` coordinate as position codes (``sweep.plan.NAMED``)."""
        self.lengths = np.asarray(array(self.group, "prompt_length")[:])
        self.names = names
        # Opened by its own path: read through the root, its attributes (the runs) would
        # come from the root's consolidated metadata, frozen at creation.
        self.meta = zarr.open_group(backend.location, path=META, mode="r+")

    def _array(self, name: str) -> zarr.Array:
        # A chunk of NaN equals the fill value; write it anyway, so a missing chunk file
        # always means a lost one.
        return array(self.group, name).with_config({"write_empty_chunks": True})

    def done(self) -> np.ndarray:
        """Per unit: 0 if not done, else the number of the run that computed it."""
        return np.asarray(array(self.meta, "done")[:])

    def begin_run(self) -> int:
        """Record this run (number, start, host, pid) and return its number."""
        runs = list(self.meta.attrs.get("runs", []))  # type: ignore[arg-type]
        number = len(runs) + 1
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        runs.append({"run": number, "started": started, "host": socket.gethostname(),
                     "pid": os.getpid()})  # fmt: skip
        self.meta.attrs["runs"] = runs
        return number

    def todo(self, plan: Plan) -> tuple[list[WorkUnit], list[WorkUnit]]:
        """Units to compute: not done, or done but with their chunk file missing (the
        second list; they are marked not done here)."""
        done = self.done()
        present = {c.name: self.backend.files(c.name) for c in plan.components}
        lost = [
            u for u in plan.units
            if done[u.index] and chunk_key(plan, u) not in present[u.component]
        ]  # fmt: skip
        for u in lost:
            array(self.meta, "done")[u.index] = 0
        return [u for u in plan.units if not done[u.index] or u in lost], lost

    def write(self, unit: WorkUnit, values: np.ndarray, block: BlockData, run: int) -> None:
        """Write the unit's chunk, its prompt block's baselines and tokens (once per block),
        then mark them done (in that order: see module doc)."""
        self.lease.check()
        region = (
            slice(None),
            slice(unit.layer_start, unit.layer_start + len(unit.layers)),
            *(slice(None) for _ in unit.grid),
            slice(unit.prompt_start, unit.prompt_stop),
        )
        writes = [(self._array(unit.component), region, values)]
        index = unit.prompt_start // self.prompt_block
        blocks = array(self.meta, "blocks")
        first = not blocks[index]
        if first:
            writes += self._block_writes(block, unit.prompt_stop)
        _write_all(writes)  # the chunk and the block's labels, then their marks
        if first:
            blocks[index] = run
        array(self.meta, "done")[unit.index] = run

    def _block_writes(self, block: BlockData, stop: int) -> list[tuple[Any, Any, Any]]:
        """A prompt block's baselines, tokens and texts: (array, region, values)."""
        prompts = slice(block.prompt_start, stop)
        index = resolve_positions(self.positions, self.lengths[prompts], block.named)
        out: list[tuple[Any, Any, Any]] = []
        for run in ("clean", "corrupted"):
            out.append((self._array(f"{run}_baseline"), (slice(None), prompts),
                        getattr(block, f"{run}_baseline")))  # fmt: skip
            out.append((self._array(f"{run}_token"), prompts,
                        _at(getattr(block, f"{run}_str"), index)))  # fmt: skip
        if "position_name" in self.group:  # stores made before named positions lack it
            out.append((self._array("position_index"), prompts, index))
            out.append((self._array("position_name"), prompts,
                        _names_at(block.named, index, self.names)))  # fmt: skip
        for name, values in {**block.texts, **block.ids}.items():
            if name in self.group:  # stores made before the task's texts were kept lack it
                dtype = object if name in PROMPT_TEXTS else np.int64
                out.append((self._array(name), prompts, np.asarray(values, dtype=dtype)))
        return out

    def write_cells(
        self, name: str, cells: list[dict[str, int | str]], values: np.ndarray, prompts: slice
    ) -> None:
        """Single cells of ``name`` by their coordinates (``layer`` and each dim); values
        [metric, cell, prompt]. Only the driver writes, after every unit is done."""
        self.lease.check()
        arr = self._array(name)
        dims = list(arr.metadata.dimension_names or ())[1:-1]  # type: ignore[union-attr]
        index = {d: list(np.asarray(array(self.group, d)[:])) for d in dims}
        for i, cell in enumerate(cells):
            where = tuple(index[d].index(cell[d]) for d in dims)
            arr[(slice(None), *where, prompts)] = values[:, i]  # type: ignore[index]

    def record(self, name: str, value: Any) -> None:
        """A root attribute summarising finished results (a circuit store's curve scores),
        consolidated so that readers see it."""
        self.lease.check()
        group = zarr.open_group(self.backend.location, mode="r+", use_consolidated=False)
        group.attrs[name] = value
        _consolidate(self.backend.location)

    def verified(self) -> int:
        """The run that stored the exact values of AtP's top cells (0: not yet)."""
        return int(np.asarray(array(self.meta, "verified")[:])[0])

    def mark_verified(self, run: int) -> None:
        array(self.meta, "verified")[0] = run


def _at(rows: list[list[str]], index: np.ndarray) -> np.ndarray:
    """Each prompt's token strings at the store's positions (``index`` [prompt, pos], as
    ``resolve_positions`` gives it; '' where the prompt has no such position)."""
    out = np.full(index.shape, "", dtype=object)
    for (i, j), p in np.ndenumerate(index):
        if p >= 0:
            out[i, j] = rows[i][p]
    return out


def _names_at(named: np.ndarray, index: np.ndarray, names: list[str]) -> np.ndarray:
    """[prompt, pos] the name of the token at each position ('' for a token no name is
    given; the first name where a token has two)."""
    out = np.full(index.shape, "", dtype=object)
    for (i, j), p in np.ndenumerate(index):
        hits = np.flatnonzero(named[i] == p) if p >= 0 and named.size else np.array([])
        if len(hits):
            out[i, j] = names[int(hits[0])]
    return out


def array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    assert isinstance(node, zarr.Array), f"{name} is not an array"
    return node


def chunk_key(plan: Plan, unit: WorkUnit) -> str:
    """The file of the unit's chunk, relative to its array (``c/0/1/0/0``)."""
    layers = plan.chunks(plan.component(unit.component))[1]
    index = [
        0,
        unit.layer_start // layers,
        *(0 for _ in unit.grid),
        unit.prompt_start // plan.prompt_block,
    ]
    return "c/" + "/".join(map(str, index))


def open_dataset(path: str | os.PathLike[str], *, in_memory: bool = False) -> xr.Dataset:
    """The store at ``path`` (a local path or fsspec URL) as an xarray Dataset of dask
    arrays, one dask chunk per zarr chunk: nothing is read until values are used, and
    reductions (``mean("prompt")``, ``top_cells``) run chunk by chunk, so a store larger
    than memory can be summarised. Cells not yet computed are NaN. ``in_memory``: read
    it all now, as numpy (a small store, without dask's costs); a chunk whose bytes are
    damaged is then one line, pointing at ``sweep.status --verify``. Researchers open a
    store with ``sweep.open_results`` (``sweep.results.dataset``), which adds
    ``ds.patchsweep``."""
    backend = backend_for(str(path))
    backend.check_reachable()
    if not is_store(backend, key="STORE"):
        raise StoreError(f"STORE: {path}: no such store")
    try:
        ds = xr.open_zarr(backend.location, chunks=None)
    except (ValueError, KeyError, OSError) as e:
        raise StoreDamagedError(f"{path}: the store cannot be opened ({_first_line(e)})") from None
    # Data variables as dask arrays, one dask chunk per zarr chunk; coordinates stay lazily
    # indexed numpy (``ds["clean_token"].sel(prompt=0, pos=3).item()`` reads one chunk).
    if in_memory:
        try:
            ds = ds.load()
        except Exception as e:  # a codec's own error type: zstd, blosc, ...
            raise StoreDamagedError(
                f"STORE: a chunk of {path} cannot be read ({type(e).__name__}); run python "
                f"-m sweep.status {path} --verify, then the sweep's command to recompute it"
            ) from None
    else:
        # Named here: dask would hash every array's metadata to name it (half the cost of
        # opening a small store); a fresh tag per open keeps two opens' arrays apart.
        tag = uuid.uuid4().hex
        for name, var in ds.data_vars.items():
            chunks = dict(zip(var.dims, var.encoding["chunks"], strict=True))
            ds[name] = var.variable.chunk(chunks, name=f"{name}-{tag}")
    if "size" in ds.dims and not (np.diff(ds["size"].values) > 0).all():
        ds = ds.sortby("size")  # a circuit store's sizes added later sit at its end
    return ds


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
