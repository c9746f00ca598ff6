"""Circuits read from stores: the ranking a scores store gives, and a circuit store's
faithfulness.

A circuit store (``grid=circuit``) holds ``circuit`` [metric, size, prompt]: the metric of
the clean prompts with every edge outside the top ``size`` ablated, and the ranking along
``rank`` (``circuit_sender``, ``circuit_receiver``, ``circuit_score``). Faithfulness of a
size is (circuit - empty) / (full - empty) of the means over the prompts: 0 is the empty
circuit (every edge ablated), 1 the whole model. Torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from sweep.edges.circuit import Ranking
from sweep.edges.graph import GraphShape
from sweep.errors import ConfigError, SweepError
from sweep.results.analysis import check_metric, edge_variables, is_estimate, scale, top_edges

CIRCUIT = "circuit"
"""The store variable of a circuit sweep."""
GAP = 1e-6
"""A full-minus-empty gap of the mean this small leaves faithfulness undefined."""
FAITHFUL = 0.8
"""The faithfulness the drawn circuit reaches (the smallest stored size that does)."""


def store_ranking(path: str, metric: str | None, key: str = "grid.scores") -> tuple[
    Ranking, dict[str, Any], GraphShape
]:  # fmt: skip
    """The edges of a finished edge store, by |mean effect| over its prompts (an EAP
    store's estimates, an exact store's patched values), with the store's fingerprint (the
    model and task it was made on) and its graph. Anything else is refused, naming it."""
    from sweep.results.status import done_marks
    from sweep.results.store import fingerprint_of, open_results

    try:
        ds = open_results(path)
    except SweepError as e:
        raise ConfigError(f"{key}: {str(e).removeprefix('STORE: ')}") from None
    if not edge_variables(ds):
        made = ds.attrs.get("components", [])
        what = "a circuit store" if is_circuit(ds) else f"a store of cells ({', '.join(made)})"
        raise ConfigError(
            f"{key}: {path} is {what}, not of edges; rank a "
            "circuit by an edge store's scores: grid=edges (exact) or grid=edges "
            "intervention=eap (EAP, EAP-IG)"
        )
    if "pos" in ds["edges"].dims:
        raise ConfigError(
            f"{key}: {path} holds edges one position at a time (grid.positions); a circuit "
            "keeps whole edges: rank it by a store made without grid.positions"
        )
    done = done_marks(path)
    if not (done > 0).all():
        raise ConfigError(
            f"{key}: {path} is not finished ({int((done > 0).sum())} of {len(done)} units "
            "done); run its sweep to the end (the same command resumes it) first"
        )
    try:
        metric = check_metric(ds, metric)
    except ValueError as e:
        raise ConfigError(f"grid.rank_metric: {e}") from None
    table = top_edges(ds.load(), int(ds["edges"].isel(metric=0).notnull().any("prompt").sum()),
                      metric, min_prompts=1)  # fmt: skip
    sc = scale(ds)
    # An estimate by its name alone (``EAP-IG (5 steps)``); exact scores by what patched.
    method = sc.intervention.rsplit(" ", 1)[0] if is_estimate(ds) else f"exact ({sc.intervention})"
    ranking = Ranking(
        edges=tuple(zip(table["sender"].astype(str), table["receiver"].astype(str), strict=True)),
        scores=tuple(float(x) for x in table["effect"]),
        method=method,
        source=str(path),
        metric=metric,
    )
    from sweep.results.backends import backend_for

    made_on = fingerprint_of(backend_for(str(path))) or {}
    return ranking, made_on, GraphShape(**ds.attrs["graph"])


def is_circuit(ds: xr.Dataset) -> bool:
    return CIRCUIT in ds.data_vars and "size" in ds[CIRCUIT].dims


def check_circuit(ds: xr.Dataset) -> None:
    if not is_circuit(ds):
        raise ValueError("this store holds no circuits; make one with python -m sweep.circuit")


def faithfulness(ds: xr.Dataset, metric: str | None = None) -> xr.DataArray:
    """[size] (circuit - empty) / (full - empty) of the means over the prompts computed at
    that size and at both ends (all of them, in a finished store; ``attrs["n"]`` per
    size). NaN for a size not computed yet, and where the full model and the empty circuit
    give the same mean (nothing to be faithful to)."""
    check_circuit(ds)
    v = ds[CIRCUIT].sel(metric=check_metric(ds, metric))
    empty, full = v.isel(size=0), v.isel(size=-1)
    ok = v.notnull() & empty.notnull() & full.notnull()
    gap = (full - empty).where(ok).mean("prompt")
    out = ((v - empty).where(ok).mean("prompt") / gap).where(np.abs(gap) > GAP)
    out.attrs.update(
        long_name="faithfulness", n=ok.sum("prompt").values.tolist(),
        n_prompts=int(ds.sizes["prompt"]), empty=float(empty.mean()), full=float(full.mean()),
    )  # fmt: skip
    return out


def method(ds: xr.Dataset) -> str:
    """What ranked a circuit store's edges (``exact (patch noise)``, ``EAP``...)."""
    return str((ds.attrs.get("circuit") or {}).get("method", "circuit"))


def ablation(ds: xr.Dataset) -> str:
    """What an edge outside the circuit carries, in words."""
    kind = scale(ds).intervention
    return "the corrupted run's sender output" if kind.startswith("patch") else kind


def faithful_size(ds: xr.Dataset, metric: str | None = None, at: float = FAITHFUL) -> int | None:
    """The smallest stored size (not the whole graph) whose faithfulness reaches ``at``."""
    f = faithfulness(ds, metric)
    sizes = [int(s) for s, v in zip(f["size"].values[:-1], f.values[:-1], strict=True) if v >= at]
    return min(sizes) if sizes else None


def circuit_edges(ds: xr.Dataset, size: int) -> Any:
    """The top ``size`` edges of the ranking: sender, receiver and score (a pandas table)."""
    import pandas as pd

    k = min(size, int(ds.sizes["rank"]))
    return pd.DataFrame({
        "sender": [str(x) for x in ds["circuit_sender"].values[:k]],
        "receiver": [str(x) for x in ds["circuit_receiver"].values[:k]],
        "score": ds["circuit_score"].values[:k].astype(float),
    })  # fmt: skip


def circuit_lines(ds: xr.Dataset) -> list[str]:
    """The report: each size's faithfulness and metric, what ranked and what ablated."""
    metric = check_metric(ds, None)
    f = faithfulness(ds, metric)
    m = ds[CIRCUIT].sel(metric=metric).mean("prompt").values
    n, total = ds.sizes["prompt"], int(ds["size"].values[-1])
    lines = [
        f"circuits: the top edges by {method(ds)} scores kept, every other edge carrying "
        f"{ablation(ds)}; faithfulness on {metric} = (circuit - empty) / (full - empty), "
        f"means over all {n} prompts (empty {f.attrs['empty']:.3f}, full model "
        f"{f.attrs['full']:.3f}, {total} edges):"
    ]
    if abs(f.attrs["full"] - f.attrs["empty"]) <= GAP:
        lines.append(
            "  the full model and the empty circuit give the same mean: faithfulness is "
            "undefined (this task does not separate them under this ablation)"
        )
    for size, value, mean, reached in zip(ds["size"].values, f.values, m, f.attrs["n"],
                                          strict=True):  # fmt: skip
        if not reached:
            lines.append(f"  {int(size):>6} edges: not computed yet")
        elif np.isnan(value):
            lines.append(f"  {int(size):>6} edges: {metric} {mean:.3f}")
        else:
            part = f", {reached} of {n} prompts" if reached < n else ""
            lines.append(
                f"  {int(size):>6} edges: faithfulness {value:+.3f} ({metric} {mean:.3f}{part})"
            )
    return lines
