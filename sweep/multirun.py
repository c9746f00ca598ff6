"""``python -m sweep -m ...``: the jobs of a multirun, their store names and the manifest.

Hydra's basic sweeper runs the cartesian product of the sweep overrides, in command-line
order; the same product, made here before Hydra starts, checks every job's config and
names every job's store, so the manifest lists every job before the first one runs.
Store names are short: ``sweep-3-task.n_prompts=16.zarr``, the job number and the
overrides that vary between jobs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweep.errors import ConfigError


@dataclass(frozen=True)
class Sweep:
    """The jobs of one command: each job's overrides, and the keys that vary."""

    jobs: tuple[tuple[str, ...], ...]
    varied: tuple[str, ...]


def sweep_of(overrides: list[str]) -> Sweep:
    """The jobs Hydra's basic sweeper makes of these overrides, in its order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    varied = tuple(o.get_key_element() for o in parsed if o.is_sweep_override())
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return Sweep(tuple(tuple(job) for job in batch), varied)


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_store(cfg: DictConfig, overrides: list[str], num: int, varied: tuple[str, ...]) -> str:
    """``dir/sweep.zarr`` -> ``dir/sweep-NUM-VARIED.zarr``: the job's number and its
    overrides of the keys that vary between jobs (sanitised). The same command names the
    same stores, so a multirun resumes like a single run."""
    parts = [o for o in overrides if key_of(o) in varied and key_of(o) != "store.path"]
    tag = str(num) + ("-" + ",".join(sorted(parts)) if parts else "")
    return tagged(str(cfg.store.path), re.sub(r"[^\w.,=+-]", "_", tag))


def tagged(path: str, tag: str) -> str:
    """``dir/sweep.zarr`` -> ``dir/sweep-TAG.zarr``; string-wise, so URLs stay URLs."""
    head, slash, name = path.rstrip("/").rpartition("/")
    stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
    return f"{head}{slash}{stem}-{tag}{dot}{suffix}"


def manifest_path(store_path: str) -> Path:
    """``dir/sweep.zarr`` -> ``dir/sweep-multirun.yaml`` (a URL store's, in the working
    directory)."""
    name = tagged(store_path, "multirun").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    if "://" in store_path:
        return Path.cwd() / f"{stem}.yaml"
    return Path(store_path.rstrip("/")).parent / f"{stem}.yaml"


def write_manifest(path: Path, sweep: Sweep, stores: list[str], command: list[str]) -> None:
    """Every job's number, store (relative to the manifest where it is a local path) and
    overrides, written whole (a temporary file renamed into place)."""
    import yaml

    if path.exists() and "patchsweep_multirun" not in path.read_text(errors="replace"):
        raise ConfigError(
            f"store.path: {path} exists and is not a patchsweep multirun manifest; move it, "
            "or choose another store.path (the manifest goes next to the stores)"
        )

    def where(store: str) -> str:
        return store if "://" in store else os.path.relpath(store, path.parent)

    data: dict[str, Any] = {
        "patchsweep_multirun": 1,
        "command": " ".join(command),
        "varied": list(sweep.varied),
        "jobs": [
            {
                "job": i,
                "store": where(store),
                "overrides": {
                    key_of(o): o.split("=", 1)[1] for o in job if key_of(o) in sweep.varied
                },
            }
            for i, (job, store) in enumerate(zip(sweep.jobs, stores, strict=True))
        ],  # fmt: skip
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
