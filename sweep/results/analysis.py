"""Reading a results store: effects, scales per intervention, statistics over prompts, top cells.

One definition of an effect, used by every summary (``top_cells``, ``normalized``, the
command line's report, the heatmaps, AtP's top cells): per prompt, the cell's value minus
that prompt's own baseline; averaged over the prompts that reach the cell (a position past
a prompt's end is NaN for it and left out), with ``n`` counting them. Prompts of different
lengths never mix one prompt's value with another's baseline.

Every function takes the xarray Dataset that ``sweep.open_results`` returns and returns
xarray or pandas objects. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sweep.components import DIMS


def components(ds: xr.Dataset) -> list[str]:
    """The component variables of a store (not baselines, not ``*_exact``, not edges)."""
    return [n for n in ds.attrs.get("components", []) if n in ds and "layer" in ds[n].dims]


def edge_variables(ds: xr.Dataset) -> list[str]:
    """The edge variables of a store (``edges``, of an edge sweep: receiver x sender)."""
    return [n for n in ds.attrs.get("components", []) if n in ds and "receiver" in ds[n].dims]


def metrics(ds: xr.Dataset) -> list[str]:
    return [str(m) for m in ds["metric"].values]


def check_metric(ds: xr.Dataset, metric: str | None) -> str:
    """``metric``, or the store's first; an unknown one is named with the store's metrics."""
    known = metrics(ds)
    if metric is None:
        return known[0]
    if metric not in known:
        raise ValueError(f"metric {metric!r} is not in this store; it has: {', '.join(known)}")
    return metric


def base_run(ds: xr.Dataset) -> str:
    """The run the intervention changed: its baseline is the value of changing nothing
    (one job of a multirun, ``open_multirun(...).sel(job=N)``, carries its own)."""
    if "base_run" in ds.coords and ds["base_run"].ndim == 0:
        return str(ds["base_run"].item())
    return str(ds.attrs.get("base_run", "corrupted"))


def _intervention_keys(ds: xr.Dataset) -> dict:
    if "intervention_keys" in ds.coords and ds["intervention_keys"].ndim == 0:
        return dict(json.loads(str(ds["intervention_keys"].item())))
    return dict(ds.attrs.get("intervention_keys") or {})


def _metric(ds: xr.Dataset, metric: str | None) -> xr.Dataset:
    """The store at one metric (its ``metric`` dim dropped), or every metric (None)."""
    return ds if metric is None else ds.sel(metric=check_metric(ds, metric))


def effect(
    ds: xr.Dataset, name: str, relative_to: str | None = None, *, metric: str | None = None
) -> xr.DataArray:
    """Per prompt: the cell's value minus that prompt's ``relative_to`` baseline (default:
    the base run's). NaN where the cell does not exist for the prompt. ``metric``: one
    metric (default: all, along ``metric``)."""
    ds = _metric(ds, metric)
    baseline = ds[f"{relative_to or base_run(ds)}_baseline"]
    return ds[name] - baseline


def normalized(
    ds: xr.Dataset, name: str, per_prompt: bool = False, *, metric: str | None = None
) -> xr.DataArray:
    """(patched - corrupted) / (clean - corrupted): 1 = the cell restores the clean
    behaviour, 0 = no change from the corrupted run.

    Per cell, over the prompts that reach it: the mean of (value - corrupted) over the
    mean of (clean - corrupted) of those same prompts (a prompt whose runs barely differ
    would otherwise divide by ~0). ``per_prompt=True``: each prompt's own ratio, with its
    ``prompt`` dim. ``metric``: one metric (default: all, along ``metric``).
    """
    ds = _metric(ds, metric)
    value = ds[name]
    reach = value.notnull()
    clean, corrupted = ds["clean_baseline"], ds["corrupted_baseline"]
    if per_prompt:
        return (value - corrupted) / (clean - corrupted)
    gap = (clean - corrupted).where(reach)
    return (value - corrupted).mean("prompt") / gap.mean("prompt")


@dataclass(frozen=True)
class Scale:
    """How an intervention's values read: the fraction of the clean-corrupted gap a cell
    restores (denoising) or destroys (noising and ablations), so 0 is always "no change"."""

    kind: str
    """``restored`` or ``destroyed``."""
    intervention: str
    """The intervention as titles name it (``patch denoise``, ``zero ablation``...)."""

    @property
    def label(self) -> str:
        if self.kind == "restored":
            return "fraction of the clean behaviour restored (0 = the corrupted run, 1 = clean)"
        return "fraction of the clean behaviour destroyed (0 = no change, 1 = the corrupted run)"

    @property
    def short(self) -> str:
        return f"fraction {self.kind}"

    @property
    def bar(self) -> str:
        """The colour bar's label: short, with its two ends."""
        ends = (
            "0 = corrupted, 1 = clean"
            if self.kind == "restored"
            else "0 = no change, 1 = corrupted"
        )
        return f"{self.short}\n({ends})"


def scale(ds: xr.Dataset) -> Scale:
    """The store's scale: denoising restores (its base is the corrupted run), everything
    else (noising, zero/mean/resample ablation) destroys from the clean run."""
    keys = _intervention_keys(ds)
    kind = str(keys.get("kind", ds.attrs.get("intervention", "patch")))
    if kind in ("patch", "atp", "eap"):
        what = {"patch": "patch", "atp": "AtP", "eap": "EAP"}[kind]
        steps = int(keys.get("steps", 1) or 1)
        if kind == "eap" and steps > 1:
            what = f"EAP-IG ({steps} steps)"
        name = f"{what} {keys.get('direction') or 'denoise'}"
        if keys.get("ablation", "patch") != "patch":  # EAP's scores of an ablation's change
            name = f"{what} with {keys['ablation']} ablation"
    else:
        name = f"{kind} ablation"
    return Scale("restored" if base_run(ds) == "corrupted" else "destroyed", name)


def method_of(ds: xr.Dataset) -> str:
    """What computed a store's values: ``exact`` (patched), or the estimator (``AtP``,
    ``EAP``, ``EAP-IG (5 steps)``)."""
    if not is_estimate(ds):
        return "exact"
    return scale(ds).intervention.split(" with ")[0].removesuffix(" noise").removesuffix(" denoise")


def ablation_of(ds: xr.Dataset) -> str:
    """What replaced a store's cells or senders, as one word pair: ``patch denoise``,
    ``patch noise`` (the other run's activations), ``zero``, ``mean`` or ``resample``
    (EAP's and AtP's scores: what their estimate patches)."""
    keys = _intervention_keys(ds)
    return ablation_in({"kind": ds.attrs.get("intervention", "patch"), **keys})


def ablation_in(keys: Any) -> str:
    """``ablation_of`` from an intervention's keys (a store's attrs, or its config)."""
    kind = str(keys.get("kind", "patch"))
    if kind == "eap" and str(keys.get("ablation", "patch")) != "patch":
        return str(keys["ablation"])
    if kind in ("patch", "atp", "eap"):
        return f"patch {keys.get('direction') or 'denoise'}"
    return kind


def scaled(
    ds: xr.Dataset, name: str, per_prompt: bool = False, *, metric: str | None = None
) -> xr.DataArray:
    """Each cell on its intervention's own scale (``scale``): denoising,
    (value - corrupted) / (clean - corrupted), the fraction restored; noising and
    ablations, (clean - value) / (clean - corrupted), the fraction destroyed. Either way 0
    is no change. Averaged like ``normalized``: mean numerator over the mean gap of the
    prompts that reach the cell (``per_prompt=True``: each prompt's own ratio)."""
    fraction = normalized(ds, name, per_prompt, metric=metric)
    return fraction if scale(ds).kind == "restored" else 1 - fraction


GAP_SHARE = 0.1
"""A prompt whose clean-corrupted gap is under this share of the mean gap (or of the other
sign) has per-prompt scaled values far outside 0..1."""


def gap_warning(ds: xr.Dataset, metric: str | None = None) -> str:
    """A line naming the prompts whose clean-corrupted gap is tiny or inverted ('' when
    none is): their own scaled values mislead; summaries divide by the mean gap."""
    metric = check_metric(ds, metric)
    gap = (ds["clean_baseline"] - ds["corrupted_baseline"]).sel(metric=metric).values
    gap = gap[np.isfinite(gap)]
    if not len(gap):
        return ""
    mean = float(gap.mean())
    if abs(mean) <= 1e-6 * max(1.0, float(np.abs(gap).max())):
        return (
            f"warning: the mean clean-corrupted gap of {metric} is {mean:.3g}, about 0: scaled "
            "values divide by it and mean nothing; this task does not separate clean from "
            "corrupted for this model"
        )
    bad = int(((gap * mean <= 0) | (np.abs(gap) < GAP_SHARE * abs(mean))).sum())
    if not bad:
        return ""
    return (
        f"warning: {bad} of {len(gap)} prompts have a clean-corrupted gap of {metric} that is "
        f"inverted or under {GAP_SHARE:.0%} of the mean gap ({mean:+.3g}); their own "
        "per-prompt fractions are far outside 0..1, so summaries divide by the mean gap of "
        "the prompts that reach each cell"
    )


def summarize(
    values: xr.DataArray,
    dim: str = "prompt",
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> xr.Dataset:
    """Mean, standard error and a percentile bootstrap confidence interval over ``dim``.

    NaN entries (cells past a prompt's end) are left out of each cell's statistics, and
    ``n`` counts the prompts that are in.
    """
    n = values.count(dim)
    mean = values.mean(dim)
    sem = values.std(dim, ddof=1) / np.sqrt(n)
    low, high = bootstrap_ci(values, dim, ci, n_boot, seed)
    return xr.Dataset({"mean": mean, "sem": sem, "ci_low": low, "ci_high": high, "n": n})


def effect_summary(
    ds: xr.Dataset, name: str, metric: str | None = None, relative_to: str | None = None, **kw
) -> xr.Dataset:
    """``summarize`` of each cell's effect over the prompts that reach it."""
    metric = check_metric(ds, metric)
    return summarize(effect(ds, name, relative_to).sel(metric=metric), **kw)


def bootstrap_ci(
    values: xr.DataArray, dim: str = "prompt", ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[xr.DataArray, xr.DataArray]:
    """Percentile bootstrap interval of the mean over ``dim``, each cell resampled from
    the entries that reach it (are not NaN) only.

    Cells are grouped by which prompts reach them (that follows from the prompts' lengths,
    so there are few groups); a group of ``m`` prompts draws ``m`` of them per resample
    from a generator seeded by ``seed`` alone, so prompts that never reach a cell do not
    change its interval. On a lazy (dask) store it runs block by block of cells, each
    with all of its prompts, so the whole variable is never in memory at once.
    """
    quantiles = [(1 - ci) / 2, (1 + ci) / 2]

    def interval(data: np.ndarray) -> np.ndarray:  # [..., dim] -> [..., 2]
        flat = data.reshape(-1, data.shape[-1])
        out = np.full((flat.shape[0], 2), np.nan)
        reach = ~np.isnan(flat)
        patterns, group = np.unique(reach, axis=0, return_inverse=True)
        for g, pattern in enumerate(patterns):
            cols = np.flatnonzero(pattern)
            if cols.size:
                cells = np.flatnonzero(group.ravel() == g)
                means = flat[np.ix_(cells, cols)] @ draw_counts(cols.size, n_boot, seed)
                out[cells] = np.quantile(means / cols.size, quantiles, axis=-1).T
        return out.reshape(*data.shape[:-1], 2)

    if values.chunks is not None:
        values = values.chunk({dim: -1})
    bounds = xr.apply_ufunc(
        interval, values, input_core_dims=[[dim]], output_core_dims=[["bound"]],
        dask="parallelized", output_dtypes=[float],
        dask_gufunc_kwargs={"output_sizes": {"bound": 2}},
    )  # fmt: skip
    return bounds.isel(bound=0, drop=True), bounds.isel(bound=1, drop=True)


def draw_counts(m: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``m`` prompts is drawn in each of ``n_boot`` resamples of ``m``:
    a resample's mean is then one product with these counts, so memory is cells x n_boot,
    not cells x n_boot x prompts. ``[m, n_boot]``."""
    picks = np.random.default_rng(seed).integers(0, m, (n_boot, m))
    rows = np.repeat(np.arange(n_boot), m)
    return np.bincount(rows * m + picks.ravel(), minlength=n_boot * m).reshape(n_boot, m).T


def default_min_prompts(ds: xr.Dataset) -> int:
    """Half the store's prompts, rounded up: a cell fewer prompts reach is left out of top
    cells and pictures by default (its mean speaks for a few prompts, not the task)."""
    return (int(ds.sizes["prompt"]) + 1) // 2


def reached(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Per cell of ``name``: how many prompts reach it (the prompts its means average)."""
    return ds[name].isel(metric=0).notnull().sum("prompt")


def top_cells(
    ds: xr.Dataset,
    k: int = 10,
    metric: str | None = None,
    names: list[str] | None = None,
    relative_to: str | None = None,
    min_prompts: int | None = None,
) -> pd.DataFrame:
    """The ``k`` cells with the largest |mean effect| across components.

    ``relative_to`` is the run whose baseline an effect is measured from (default: the
    store's ``base_run``: ``corrupted`` for denoising, ``clean`` for noising and
    ablations). Columns: component, layer, each grid dim the components have (``<NA>`` where
    a component has no such dim), value and effect (means over the ``n`` prompts that reach
    the cell), and scaled (the effect on the intervention's own scale, ``scaled``). Cells
    reached by fewer than ``min_prompts`` prompts (default: half of them,
    ``default_min_prompts``) are left out; ``attrs`` says how many were.
    """
    metric = check_metric(ds, metric)
    need = default_min_prompts(ds) if min_prompts is None else int(min_prompts)
    names = names or components(ds)
    if not names:
        raise ValueError(_no_cells(ds))
    dims = [d for d in DIMS if any(d in ds[n].dims for n in names)]
    frames, left_out = [], 0
    for name in names:
        table, out = _means(ds, name, metric, relative_to, need)
        left_out += out
        frames.append(table.assign(component=name))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for d in ["layer", *dims]:
        if d not in table:
            table[d] = pd.array([pd.NA] * len(table), "Int64")
        elif ds[d].dtype.kind in "iuf":  # named positions stay names
            table[d] = table[d].astype("Int64")
    table = table.reindex(columns=["component", "layer", *dims, "value", "effect", "scaled", "n"])
    table["n"] = table["n"].astype(int)
    top = _largest(table, "effect", k)
    top.attrs.update(min_prompts=need, left_out=left_out, n_prompts=int(ds.sizes["prompt"]))
    return top


def _no_cells(ds: xr.Dataset) -> str:
    """Why a store has no cells to rank, and what reads it instead."""
    if edge_variables(ds):
        return "this store holds edges, not cells: use top_edges (ds.patchsweep.top_edges())"
    if "circuit" in ds.data_vars:
        return ("this store holds circuits, not cells: use faithfulness and circuit_edges "
                "(ds.patchsweep.faithfulness(), ds.patchsweep.circuit(K))")  # fmt: skip
    return "this store holds no components"


def _means(
    ds: xr.Dataset, name: str, metric: str, relative_to: str | None, need: int
) -> tuple[pd.DataFrame, int]:
    """Per cell of ``name``: value, effect and scaled effect (means over the ``n`` prompts
    that reach it), for the cells at least ``need`` prompts reach; and how many cells
    fewer prompts reach."""
    per_prompt = effect(ds, name, relative_to).sel(metric=metric)
    table = xr.Dataset(
        {
            "value": ds[name].sel(metric=metric).mean("prompt"),
            "effect": per_prompt.mean("prompt"),
            "scaled": scaled(ds, name, metric=metric),
            "n": per_prompt.count("prompt"),
        }
    ).to_dataframe()
    left_out = int(((table["n"] > 0) & (table["n"] < need)).sum())
    return table[table["n"] >= max(need, 1)].reset_index(), left_out


def _largest(table: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    order = table[column].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(k).reset_index(drop=True)


def top_edges(
    ds: xr.Dataset,
    k: int = 10,
    metric: str | None = None,
    relative_to: str | None = None,
    min_prompts: int | None = None,
) -> pd.DataFrame:
    """The ``k`` edges with the largest |mean effect| of an edge store, as ``top_cells``
    reads cells: columns sender, receiver, (pos, for edges one position at a time,) their
    layers, value and effect (means over the ``n`` prompts), scaled (the intervention's own
    scale). Pairs that are not edges (the
    receiver reads before the sender writes) have no value and never appear."""
    metric = check_metric(ds, metric)
    need = default_min_prompts(ds) if min_prompts is None else int(min_prompts)
    names = edge_variables(ds)
    if not names:
        raise ValueError("this store holds no edges; make one with grid=edges")
    table, left_out = _means(ds, names[0], metric, relative_to, need)
    at = ["pos"] if "pos" in ds[names[0]].dims else []  # edges one position at a time
    columns = ["sender", "receiver", *at, "sender_layer", "receiver_layer", "value", "effect",
               "scaled", "n"]  # fmt: skip
    table = table.reindex(columns=columns)
    table["n"] = table["n"].astype(int)
    top = _largest(table, "effect", k)
    top.attrs.update(min_prompts=need, left_out=left_out, n_prompts=int(ds.sizes["prompt"]))
    return top


def is_estimate(ds: xr.Dataset) -> bool:
    """Whether the store's values are first-order estimates (AtP's, EAP's), not patched
    values."""
    kind = _intervention_keys(ds).get("kind", ds.attrs.get("intervention", ""))
    return str(kind) in ("atp", "eap")


def verified(ds: xr.Dataset, metric: str | None = None) -> pd.DataFrame:
    """AtP's verified cells: each cell's estimated and exact effect side by side (means
    over the same ``n`` prompts, against each prompt's own baseline), largest exact first.
    ``attrs["correlation"]``: Pearson's r of estimate and exact over these cells (NaN for
    fewer than two)."""
    metric = check_metric(ds, metric)
    frames = []
    for name in components(ds):
        if f"{name}_exact" not in ds:
            continue
        exact = effect(ds, f"{name}_exact", metric=metric)
        estimate = effect(ds, name, metric=metric).where(exact.notnull())
        table = xr.Dataset(
            {"estimate": estimate.mean("prompt"), "exact": exact.mean("prompt"),
             "n": exact.count("prompt")}
        ).to_dataframe()  # fmt: skip
        frames.append(table[table["n"] > 0].reset_index().assign(component=name))
    dims = [d for d in ["layer", *DIMS] if any(d in f for f in frames)]
    columns = ["component", *dims, "estimate", "exact", "n"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table = table.reindex(columns=columns)
    for d in dims:
        if d in ds and ds[d].dtype.kind in "iuf":
            table[d] = table[d].astype("Int64")
    order = table["exact"].abs().sort_values(ascending=False, kind="stable").index
    table = table.loc[order].reset_index(drop=True)
    r = float(np.corrcoef(table["estimate"], table["exact"])[0, 1]) if len(table) > 1 else np.nan
    table.attrs["correlation"] = r
    return table


def verified_edges(ds: xr.Dataset, metric: str | None = None) -> pd.DataFrame:
    """EAP's verified edges: each edge's estimated and exact effect side by side (means over
    the same ``n`` prompts, against each prompt's own baseline), largest exact first;
    ``attrs["correlation"]``: Pearson's r over these edges (NaN for fewer than two)."""
    metric = check_metric(ds, metric)
    names = [n for n in edge_variables(ds) if f"{n}_exact" in ds]
    at = ["pos"] if names and "pos" in ds[names[0]].dims else []  # edges one position at a time
    columns = ["sender", "receiver", *at, "estimate", "exact", "n"]
    if not names:
        table = pd.DataFrame(columns=columns)
    else:
        exact = effect(ds, f"{names[0]}_exact", metric=metric)
        estimate = effect(ds, names[0], metric=metric).where(exact.notnull())
        table = xr.Dataset(
            {"estimate": estimate.mean("prompt"), "exact": exact.mean("prompt"),
             "n": exact.count("prompt")}
        ).to_dataframe()  # fmt: skip
        table = table[table["n"] > 0].reset_index().reindex(columns=columns)
    order = table["exact"].abs().sort_values(ascending=False, kind="stable").index
    table = table.loc[order].reset_index(drop=True)
    r = float(np.corrcoef(table["estimate"], table["exact"])[0, 1]) if len(table) > 1 else np.nan
    table.attrs["correlation"] = r
    return table


def cell_of(row: pd.Series) -> dict[str, int | str]:
    """A ``top_cells`` row's coordinates: ``layer`` and the dims its component has (a
    named position by its name)."""
    return {
        d: row[d] if isinstance(row[d], str) else int(row[d])
        for d in ["layer", *DIMS]
        if d in row and not pd.isna(row[d])
    }
