"""A multirun's stores as one Dataset: ``open_multirun("runs/sweep-multirun.yaml")``.

The manifest (written by ``python -m sweep -m ...`` before its first job) lists each job's
store and the overrides that vary; the stores are joined along a ``job`` dimension, with
one coordinate per varied key. Torch- and Hydra-free, like the rest of the results side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from sweep.errors import StoreError
from sweep.results.dataset import open_results


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's content; a file that is not one is named in one line."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise StoreError(f"{path}: cannot read the multirun manifest ({e.strerror})") from None
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict) or "patchsweep_multirun" not in data:
        raise StoreError(
            f"{path}: not a patchsweep multirun manifest (python -m sweep -m ... writes "
            "STORE-multirun.yaml next to its stores)"
        )
    return data


def open_multirun(path: str | os.PathLike[str]) -> xr.Dataset:
    """Every job's store along ``job``, with the varied keys as coordinates along it
    (``ds["task.n_prompts"]``) and each job's store path as ``store``.

    Result variables and baselines are joined where their grids agree; a dimension whose
    coordinates differ between jobs (more prompts, other layers) is the union, NaN where a
    job has no such cell. Per-prompt coordinates that differ between jobs (the prompts' own
    texts) get the ``job`` dimension too. Each job's ``base_run`` and
    ``intervention_keys`` are coordinates along ``job``: ``sweep.analysis`` reads them from
    ``ds.sel(job=N)``. Jobs whose store does not exist yet (not run, or stopped) are left
    out and named in ``attrs["missing_jobs"]``.
    """
    data = read_manifest(path)
    root = Path(path).parent
    parts, jobs, missing = [], [], []
    for entry in data.get("jobs", []):
        store = str(entry["store"])
        where = store if "://" in store else str(root / store)
        try:
            ds = open_results(where)
        except StoreError:
            missing.append(int(entry["job"]))
            continue
        parts.append(ds)
        jobs.append(entry)
    if not parts:
        raise StoreError(f"{path}: none of its {len(missing)} jobs has a store yet; run the sweep")
    names = [n for n in parts[0].data_vars if all(n in p for p in parts)]
    joined = xr.concat(
        [_objects(p[names].drop_attrs()) for p in parts], dim="job", join="outer",
        coords="different", compat="equals", data_vars="all",
    )  # fmt: skip
    varied = [str(k) for k in data.get("varied", [])]
    per_job = {k: [str(e["overrides"].get(k, "")) for e in jobs] for k in varied}
    per_job["store"] = [str(e["store"]) for e in jobs]
    # What each job's values are measured from: analysis reads these on ``ds.sel(job=N)``.
    per_job["base_run"] = [str(p.attrs.get("base_run", "corrupted")) for p in parts]
    per_job["intervention_keys"] = [
        json.dumps(p.attrs.get("intervention_keys", {}), sort_keys=True) for p in parts
    ]
    coords: dict[str, Any] = {"job": [int(e["job"]) for e in jobs]}
    coords.update({k: ("job", np.array(v, dtype=object)) for k, v in per_job.items()})
    joined = joined.assign_coords(coords)
    first = parts[0].attrs
    joined.attrs.update(
        manifest=str(path), command=str(data.get("command", "")), varied=varied,
        missing_jobs=missing, components=list(first.get("components", [])),
        intervention=str(first.get("intervention", "")),
    )  # fmt: skip
    return joined


def _objects(ds: xr.Dataset) -> xr.Dataset:
    """Text coordinates as Python objects: numpy's string dtype has no missing value, and
    joining jobs of different sizes pads the smaller ones."""
    texts = {n: v.astype(object) for n, v in ds.variables.items() if v.dtype.kind == "T"}
    return ds.assign_coords({n: v for n, v in texts.items() if n in ds.coords})
