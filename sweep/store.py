"""The results store: a zarr group that ``xarray.open_zarr`` reads directly.

Only this module writes zarr. The driver creates the store once (coordinates, NaN-filled
arrays, baselines, attrs) in a temporary directory and renames it into place, so a crash
during creation leaves nothing half-made. Afterwards each finished work unit writes
exactly one chunk, and only then is the unit marked done in ``_patchsweep/done``
(a subgroup that xarray does not show). A kill between the two costs one recomputation,
never a wrong value.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import url2pathname

import numpy as np
import xarray as xr
import zarr

from sweep.engine import TaskInfo
from sweep.errors import ConfigError, StoreMismatchError
from sweep.plan import Plan, WorkUnit

META_GROUP = "_patchsweep"
FINGERPRINT = "patchsweep_fingerprint"

Location = Path | str
"""A local directory (resolved Path) or an fsspec URL (``s3://...``, ``file://...``)."""


def location(path: str) -> Location:
    """``store.path`` as a Location: URLs stay as given, local paths are resolved."""
    if path.startswith("file://"):  # a local path in URL form: atomic creation applies
        path = url2pathname(path.removeprefix("file://"))
    if "://" not in path:
        return Path(path).expanduser().resolve()
    try:
        import fsspec  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"store.path: {path} is a URL; URLs need fsspec (pip install 'patchsweep[cluster]'"
            " and the filesystem's package, e.g. s3fs)"
        ) from None
    return path


def _exists(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.exists()
    fs, root = _fs(loc)
    return bool(fs.exists(root))


def _remove(loc: Location) -> None:
    if isinstance(loc, Path):
        shutil.rmtree(loc)
    else:
        fs, root = _fs(loc)
        fs.rm(root, recursive=True)


def _fs(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(url)


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """What the store records about the config that produced it."""

    config_yaml: str
    """The whole resolved config, for people."""
    fingerprint: dict[str, Any]
    """Everything that changes results, compared on resume."""
    model: str
    intervention: str = "patch"
    base_run: str = "corrupted"
    """The run the intervention changed: ``corrupted`` (denoise) or ``clean``."""
    exact: bool = False
    """Also hold ``{component}_exact`` (AtP: exact values of the verified cells)."""


class ResultStore:
    def __init__(self, path: Location) -> None:
        self.path = path
        self.group = zarr.open_group(str(path), mode="r+")
        self.done_array = _array(self.group, f"{META_GROUP}/done")
        self.verified_array = _array(self.group, f"{META_GROUP}/verified")

    @classmethod
    def open_or_create(
        cls, path: Location, plan: Plan, info: TaskInfo, meta: StoreMeta, overwrite: bool = False
    ) -> ResultStore:
        if _exists(path) and overwrite and _fingerprint(path) != meta.fingerprint:
            _remove(path)
        if _exists(path):
            _check_same(path, meta.fingerprint)
        else:
            _create(path, plan, info, meta)
        return cls(path)

    def done(self) -> np.ndarray:
        """Per unit: 0 if not done, else the number of the run that computed it."""
        return np.asarray(self.done_array[:])

    def write(self, unit: WorkUnit, values: np.ndarray, run: int) -> None:
        """Write the unit's chunk, then mark it done (in that order: see module doc)."""
        arr = _array(self.group, unit.component)
        region = (slice(None), slice(unit.layer_start, unit.layer_start + len(unit.layers)))
        arr[region] = values
        self.done_array[unit.index] = run

    def verified(self) -> int:
        """The run that stored the exact values of AtP's top cells (0: not yet)."""
        return int(np.asarray(self.verified_array[:])[0])

    def write_cells(self, name: str, index: list[tuple[int, ...]], values: np.ndarray) -> None:
        """Single cells of ``name`` (index per cell along layer, [pos], [head]; values
        [metric, cell, prompt]); only the driver writes, after every unit is done."""
        arr = _array(self.group, name)
        for i, where in enumerate(index):
            region: tuple[int | slice, ...] = (slice(None), *where, slice(None))
            arr[region] = values[:, i]

    def mark_verified(self, run: int) -> None:
        self.verified_array[0] = run


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    assert isinstance(node, zarr.Array), f"{name} is not an array"
    return node


def _fingerprint(path: Location) -> dict[str, Any] | None:
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    fp = attrs.get(FINGERPRINT)
    return json.loads(fp) if isinstance(fp, str) else None


def check_config(path: Location, want: dict[str, Any]) -> None:
    """Refuse early (before the model loads) a store whose config differs from ``want``."""
    if _exists(path):
        _check_same(path, want, only=tuple(want))


def _check_same(path: Location, want: dict[str, Any], only: tuple[str, ...] | None = None) -> None:
    have = _fingerprint(path)
    if have is None:
        raise StoreMismatchError(
            f"store.path: {path} exists and is not a patchsweep store; choose another store.path"
        )
    if only is not None:
        have = {k: v for k, v in have.items() if k in only}
    diffs = _diff(have, want)
    if diffs:
        lines = "\n".join(f"  {k}: store has {a!r}, this run has {b!r}" for k, a, b in diffs)
        raise StoreMismatchError(
            f"store.path: {path} was written by a different config:\n{lines}\n"
            "Use another store.path, run with the store's values, or pass "
            "store.overwrite=true to delete it and start again."
        )


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


def _create(path: Location, plan: Plan, info: TaskInfo, meta: StoreMeta) -> None:
    """Local: build in a temporary directory and rename it into place. Object stores have
    no rename: build in place and write the fingerprint last, so a half-made store is
    never taken for a finished one (it is refused; store.overwrite=true replaces it)."""
    if not isinstance(path, Path):
        _populate(path, plan, info, meta)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _populate(str(tmp), plan, info, meta)
    os.replace(tmp, path)


def _populate(target: str, plan: Plan, info: TaskInfo, meta: StoreMeta) -> None:
    _coordinates(plan, info, meta).to_zarr(target, mode="w", consolidated=False, zarr_format=3)
    group = zarr.open_group(target, mode="r+")
    for c in plan.components:
        group.create_array(
            c.name,
            shape=plan.shape(c),
            chunks=plan.chunks(c),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=["metric", "layer", *c.grid_dims, "prompt"],
        )
        if meta.exact:
            group.create_array(
                f"{c.name}_exact",
                shape=plan.shape(c),
                chunks=plan.shape(c),
                dtype="float32",
                fill_value=np.nan,
                dimension_names=["metric", "layer", *c.grid_dims, "prompt"],
            )
    meta_group = group.create_group(META_GROUP)
    meta_group.create_array(
        "done", shape=(len(plan.units),), chunks=(1,), dtype="int32", fill_value=0
    )
    meta_group.create_array("verified", shape=(1,), chunks=(1,), dtype="int32", fill_value=0)
    group.attrs[FINGERPRINT] = json.dumps(meta.fingerprint, sort_keys=True)
    with warnings.catch_warnings():
        # Consolidated metadata is not in the zarr v3 spec yet; xarray reads it quietly.
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(target)


def _coordinates(plan: Plan, info: TaskInfo, meta: StoreMeta) -> xr.Dataset:
    pos = list(plan.axes.positions)
    tokens = {
        name: (("prompt", "pos"), np.array([[row[p] for p in pos] for row in rows], dtype=object))
        for name, rows in (("clean_token", info.clean_str), ("corrupted_token", info.corrupted_str))
    }
    ds = xr.Dataset(
        data_vars={
            "clean_baseline": (("metric", "prompt"), info.clean_baseline),
            "corrupted_baseline": (("metric", "prompt"), info.corrupted_baseline),
        },
        coords={
            "metric": np.array(plan.metrics, dtype=object),
            "layer": np.array(plan.axes.layers, dtype=np.int64),
            "pos": np.array(pos, dtype=np.int64),
            "head": np.array(plan.axes.heads, dtype=np.int64),
            "prompt": np.arange(plan.n_prompts, dtype=np.int64),
            "prompt_length": ("prompt", np.array(info.lengths, dtype=np.int64)),
            **tokens,
        },
    )
    ds.attrs.update(
        config=meta.config_yaml,
        model=meta.model,
        patchsweep_version=info.versions["patchsweep"],
        transformer_lens_version=info.versions["transformer_lens"],
        components=[c.name for c in plan.components],
        intervention=meta.intervention,
        base_run=meta.base_run,
    )
    return ds


def open_results(path: str | os.PathLike[str]) -> xr.Dataset:  # a local path or fsspec URL
    """The store as an xarray Dataset (lazy; cells not yet computed are NaN)."""
    return xr.open_zarr(str(path))
