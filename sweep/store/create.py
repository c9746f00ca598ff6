"""Creating a store (coordinates, NaN-filled arrays, baselines, attrs, the table of work
units; built aside and renamed into place where the backend can) and growing a circuit
store by the sizes a later run asks for."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.storage import MemoryStore

from sweep.errors import StoreError
from sweep.plan import (
    PROMPT_IDS,
    PROMPT_TEXTS,
    SIZE_COORDS,
    Plan,
    TaskInfo,
    size_coords,
)
from sweep.store.backends import Backend
from sweep.store.layout import (
    FINGERPRINT,
    FORMAT,
    FORMAT_ATTR,
    META,
    StoreMeta,
    array,
    consolidate,
    metadata,
    unit_rows,
    write_all,
)
from sweep.store.lease import LEASE, Lease


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
        # Local: built in memory and written out once (a zarr call on the disk costs a
        # trip to zarr's I/O loop each; the files are the same).
        where: Any = MemoryStore() if local else target
        zarr.open_group(where, path=META, mode="a")  # holds the lease: a group first
        _populate(where, plan, info, meta)
        _finish(where, meta)
        if local:
            _write_out(where, Path(target))
            Path(target, LEASE).write_bytes(lease.data())

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


def _write_out(store: MemoryStore, target: Path) -> None:
    """A store built in memory, as files under ``target`` (zarr's local layout: a key is
    a relative path)."""
    for key, buffer in store._store_dict.items():
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.to_bytes())


def _populate(target: Any, plan: Plan, info: TaskInfo, meta: StoreMeta) -> None:
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
    sides = zip(("answer", "wrong"), info.answer_widths, info.continuations, strict=True)
    for name, width, sequence in sides:
        if width:  # a set per prompt (or a token sequence): its ids along a dim, padded -1
            set_dims = ("prompt", f"{name}_{'token' if sequence else 'set'}")
            nodes[f"{name}_id"] = _Node((n, width), (block, width), "int64", -1, set_dims)
    for c in plan.components:
        dims = ["metric", c.lead, *c.dims, "prompt"]
        nodes[c.name] = _nan_array(plan.shape(c), plan.chunks(c), dims)
        if meta.exact:
            nodes[f"{c.name}_exact"] = _nan_array(plan.shape(c), (*plan.shape(c)[:-1], block), dims)
    members = sorted(nodes)
    units, blocks = len(plan.units), len(plan.prompt_blocks)
    for name, size in (("done", units), ("blocks", blocks), ("verified", 1)):
        nodes[f"{META}/{name}"] = _Node((size,), (size,), "int32", 0, ())
    nodes[f"{META}/units"] = _Node((units, 5), (units, 5), "int32", 0, (), unit_rows(plan))
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
    write_all([
        (made[name], ..., node.values)
        for name, node in nodes.items()
        if node.values is not None and node.values.size and isinstance(made[name], zarr.Array)
    ])  # fmt: skip


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
        if not metadata(backend, "zarr.json").get("consolidated_metadata"):
            consolidate(backend.location)  # a run that grew it was killed before this
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
    table[:] = unit_rows(plan)
    group.attrs["config"] = config_yaml  # what the store now holds was asked for by this run
    consolidate(backend.location)
    return True


def _finish(target: Any, meta: StoreMeta) -> None:
    group = zarr.open_group(target, mode="r+")
    group.attrs[FINGERPRINT] = json.dumps(meta.fingerprint, sort_keys=True)  # last: complete
    consolidate(target)


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
