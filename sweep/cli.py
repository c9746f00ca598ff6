"""``python -m sweep [overrides]``: a thin Hydra wrapper around ``sweep.api.run_config``."""

from __future__ import annotations

import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sweep import config
from sweep.analysis import top_cells
from sweep.api import SweepSummary, conf_dir, run_config
from sweep.errors import SweepError
from sweep.store import open_results


def _app(cfg: DictConfig) -> None:
    _own_store_per_job(cfg)
    try:
        summary = run_config(cfg)
    except SweepError as e:
        print(f"patchsweep: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(report(summary))
    if cfg.store.plots:
        from sweep.plot import render  # matplotlib loads only when pictures are drawn

        out = render(summary.path)
        print(f"pictures: {out / 'index.html'} and one PNG per component in {out}")


def _own_store_per_job(cfg: DictConfig) -> None:
    """Under ``-m`` (multirun) each job gets its own store, named by its overrides
    (``sweep.zarr`` -> ``sweep-model.name=gpt2.zarr``), unless the sweep varies store.path.
    The same command names the same stores, so a multirun resumes like a single run."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    keys = [o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task]
    if "store.path" in keys:
        return
    # What changes results names the store; runner and store settings do not.
    parts = [
        o
        for o, k in zip(hc.overrides.task, keys, strict=True)
        if not k.startswith(("runner", "store"))
    ]
    tag = re.sub(r"[^\w.,=+-]", "_", ",".join(sorted(parts)) or str(hc.job.num))
    cfg.store.path = tagged(str(cfg.store.path), tag)


def tagged(path: str, tag: str) -> str:
    """``dir/sweep.zarr`` -> ``dir/sweep-TAG.zarr``; string-wise, so URLs stay URLs."""
    head, slash, name = path.rstrip("/").rpartition("/")
    stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
    return f"{head}{slash}{stem}-{tag}{dot}{suffix}"


def report(summary: SweepSummary, top: int = 5) -> str:
    """A short, human summary: what ran, the baselines, the cells with the largest effect."""
    ds = open_results(summary.path)
    lines = [
        f"store: {summary.path}",
        f"units: {summary.units_run} computed this run, {summary.units_total} in the sweep; "
        f"{summary.cells_run} cells in {summary.sweep_seconds:.1f} s "
        f"({summary.cells_run / max(summary.sweep_seconds, 1e-9):.0f} cells/s; "
        f"{summary.seconds:.1f} s with loading) on {summary.workers} worker(s), "
        f"{summary.worker_restarts} replaced; {summary.engine} engine",
    ]
    metric = str(ds["metric"].values[0])
    clean = float(ds["clean_baseline"].sel(metric=metric).mean())
    corr = float(ds["corrupted_baseline"].sel(metric=metric).mean())
    lines.append(f"{metric}: clean {clean:.3f}, corrupted {corr:.3f} (mean over prompts)")
    base = str(ds.attrs.get("base_run", "corrupted"))
    lines.append(f"top cells by |value - {base} baseline| of mean {metric}:")
    for r in top_cells(ds, top, metric).itertuples():
        axes = (("layer", r.layer), ("pos", r.pos), ("head", r.head))
        where = [f"{d}={v}" for d, v in axes if v >= 0]
        lines.append(f"  {r.component}[{', '.join(where)}]: {r.value:.3f}")
    return "\n".join(lines)


def main() -> None:
    config.register()
    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_app)()


if __name__ == "__main__":
    main()
