"""What a store is: its format, its metadata and the checks that recognise it (is it a
patchsweep store, of this config, of these work units), and the I/O helpers the writers
share. Torch-free: opening, checking and reporting on a store need no model."""

from __future__ import annotations

import asyncio
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from sweep.errors import StoreDamagedError, StoreError, StoreMismatchError
from sweep.plan import (
    Plan,
    WorkUnit,
)
from sweep.store.backends import Backend
from sweep.store.lease import read_holder

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
    meta = metadata(backend, "zarr.json")
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else {}


def metadata(backend: Backend, rel: str) -> dict[str, Any]:
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
        meta = metadata(backend, "zarr.json").get("consolidated_metadata") or {}
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


def write_all(writes: list[tuple[Any, Any, Any]]) -> None:
    """Regions of several arrays (array, selection, values) written together: one trip to
    zarr's I/O loop, where each ``array[selection] = values`` makes one of its own (a new
    store writes some fifteen small coordinates, a prompt block a dozen). Every write has
    finished when it returns."""

    async def every() -> None:
        await asyncio.gather(*(a._async_array.setitem(where, v) for a, where, v in writes))

    if writes:
        sync(every())


def unit_rows(plan: Plan) -> np.ndarray:
    """[unit, 5] each unit's variable, lead-dim range and prompt range (``sweep.status``)."""
    names = [c.name for c in plan.components]
    rows = [
        (names.index(u.component), u.layer_start, u.layer_start + len(u.layers))
        + (u.prompt_start, u.prompt_stop)
        for u in plan.units
    ]
    return np.array(rows, dtype=np.int32).reshape(len(plan.units), 5)


def consolidate(target: Any) -> None:
    with warnings.catch_warnings():
        # Consolidated metadata is not in the zarr v3 spec yet; xarray reads it quietly.
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(target)


def check_units(backend: Backend, plan: Plan) -> None:
    """Refuse to resume a store whose work units another planner laid out (its chunks are
    other blocks than this run's units would write)."""
    meta = zarr.open_group(backend.location, path=META, mode="r", use_consolidated=False)
    have = np.asarray(array(meta, "units")[:])
    if have.shape != (len(plan.units), 5) or not (have == unit_rows(plan)).all():
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


def store_latents(backend: Backend) -> tuple[int, ...]:
    """A latents store's SAE latent ids (others: none)."""
    group = zarr.open_group(backend.location, mode="r")
    return tuple(int(x) for x in np.asarray(array(group, "latent")[:])) if "latent" in group else ()


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
