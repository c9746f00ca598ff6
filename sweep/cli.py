"""``python -m sweep [overrides]``: a thin Hydra wrapper around ``sweep.api.run_config``."""

from __future__ import annotations

import sys

import hydra
import numpy as np
from omegaconf import DictConfig

from sweep import config
from sweep.api import SweepSummary, conf_dir, run_config
from sweep.errors import SweepError
from sweep.store import open_results


def _app(cfg: DictConfig) -> None:
    try:
        summary = run_config(cfg)
    except SweepError as e:
        print(f"patchsweep: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(report(summary))


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
    cells = []
    for name in ds.attrs["components"]:
        mean = ds[name].sel(metric=metric).mean("prompt").load()
        flat = mean.stack(cell=mean.dims)
        for i in np.argsort(-np.abs(np.nan_to_num(flat.values - corr)))[:top]:
            where = ", ".join(f"{d}={int(flat[d].values[i])}" for d in mean.dims)
            cells.append(
                (abs(float(flat.values[i]) - corr), f"{name}[{where}]", float(flat.values[i]))
            )
    lines.append(f"top cells by |patched - corrupted| of mean {metric}:")
    for _, label, value in sorted(cells, reverse=True)[:top]:
        lines.append(f"  {label}: {value:.3f}")
    return "\n".join(lines)


def main() -> None:
    config.register()
    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_app)()


if __name__ == "__main__":
    main()
