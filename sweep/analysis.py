"""Reading a results store: normalized effects, statistics over prompts, top cells.

Every function takes the xarray Dataset that ``sweep.open_results`` returns (or one of
its variables) and returns xarray or pandas objects, so they compose with ``.sel``,
``.mean`` and plotting as usual.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr


def components(ds: xr.Dataset) -> list[str]:
    """The component variables of a store (not baselines, not ``*_exact``)."""
    return list(ds.attrs.get("components", []))


def normalized(ds: xr.Dataset, name: str, per_prompt: bool = False) -> xr.DataArray:
    """(patched - corrupted) / (clean - corrupted), from the stored baselines.

    1 means the cell restores the clean behaviour fully, 0 means no change from the
    corrupted run. By default the baselines are averaged over prompts first (a prompt
    whose clean and corrupted runs barely differ would otherwise divide by ~0);
    ``per_prompt=True`` uses each prompt's own baselines.
    """
    clean, corrupted = ds["clean_baseline"], ds["corrupted_baseline"]
    if not per_prompt:
        clean, corrupted = clean.mean("prompt"), corrupted.mean("prompt")
    return (ds[name] - corrupted) / (clean - corrupted)


def summarize(
    values: xr.DataArray,
    dim: str = "prompt",
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> xr.Dataset:
    """Mean, standard error and a percentile bootstrap confidence interval over ``dim``.

    NaN entries (cells past a prompt's end) are left out of each cell's statistics.
    """
    n = values.count(dim)
    mean = values.mean(dim)
    sem = values.std(dim, ddof=1) / np.sqrt(n)
    low, high = bootstrap_ci(values, dim, ci, n_boot, seed)
    return xr.Dataset({"mean": mean, "sem": sem, "ci_low": low, "ci_high": high, "n": n})


def bootstrap_ci(
    values: xr.DataArray, dim: str = "prompt", ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[xr.DataArray, xr.DataArray]:
    """Percentile bootstrap interval of the mean over ``dim`` (resampling its entries)."""
    data = np.moveaxis(values.values, values.get_axis_num(dim), -1)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.shape[-1], size=(n_boot, data.shape[-1]))
    with warnings.catch_warnings():  # a cell no prompt reaches is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(data[..., picks], axis=-1)  # [..., n_boot]
        low, high = np.nanquantile(means, [(1 - ci) / 2, (1 + ci) / 2], axis=-1)
    template = values.isel({dim: 0}, drop=True)
    return template.copy(data=low), template.copy(data=high)


def top_cells(
    ds: xr.Dataset,
    k: int = 10,
    metric: str | None = None,
    names: list[str] | None = None,
    relative_to: str | None = None,
) -> pd.DataFrame:
    """The ``k`` cells with the largest |mean over prompts - baseline| across components.

    ``relative_to`` is the run the intervention changed (default: the store's
    ``base_run`` attr: ``corrupted`` for denoising, ``clean`` for noising and ablations,
    whose baseline is the value of doing nothing). Columns: component, layer, pos, head
    (-1 where the component has no such axis), value (mean over prompts), effect
    (value - baseline).
    """
    metric = metric or str(ds["metric"].values[0])
    relative_to = relative_to or str(ds.attrs.get("base_run", "corrupted"))
    base = float(ds[f"{relative_to}_baseline"].sel(metric=metric).mean())
    rows = []
    for name in names or components(ds):
        mean = ds[name].sel(metric=metric).mean("prompt").load()
        for idx in np.ndindex(mean.shape):
            value = float(mean.values[idx])
            if np.isnan(value):
                continue
            cell = {d: int(mean[d].values[i]) for d, i in zip(mean.dims, idx, strict=True)}
            rows.append(
                {
                    "component": name,
                    "layer": cell["layer"],
                    "pos": cell.get("pos", -1),
                    "head": cell.get("head", -1),
                    "value": value,
                    "effect": value - base,
                }
            )
    table = pd.DataFrame(rows, columns=["component", "layer", "pos", "head", "value", "effect"])
    order = table["effect"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(k).reset_index(drop=True)
