"""The lines that say what a store found: its baselines, the cells (or edges) with the
largest effect, and AtP's verified cells beside their estimates.

The command line prints them after a sweep, and the HTML page shows the same lines.
Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

import xarray as xr

from sweep.results.analysis import (
    DIMS,
    base_run,
    edge_variables,
    gap_warning,
    is_estimate,
    metrics,
    scale,
    top_cells,
    top_edges,
    verified,
    verified_edges,
)
from sweep.results.faithfulness import circuit_lines, is_circuit


def baseline_lines(ds: xr.Dataset) -> list[str]:
    """Each metric's clean and corrupted baseline, with the prompts they average over."""
    n = ds.sizes["prompt"]
    lines = []
    for metric in metrics(ds):
        clean = float(ds["clean_baseline"].sel(metric=metric).mean())
        corr = float(ds["corrupted_baseline"].sel(metric=metric).mean())
        lines.append(
            f"{metric}: clean {clean:.3f}, corrupted {corr:.3f} (mean over all {n} prompts)"
        )
    return lines


def results_lines(ds: xr.Dataset, top: int = 5, min_prompts: int | None = None) -> list[str]:
    """Baselines of the first metric, a warning about its gap, and its top cells or edges."""
    metric = metrics(ds)[0]
    n = ds.sizes["prompt"]
    lines = baseline_lines(ds)[:1]
    warning = gap_warning(ds, metric)
    if warning:
        lines.append(warning)
    if is_circuit(ds):
        return lines + circuit_lines(ds)
    if edge_variables(ds):
        return lines + _edge_lines(ds, top, metric, min_prompts)
    base, sc, estimate = base_run(ds), scale(ds), is_estimate(ds)
    receivers = ds.attrs.get("path_receivers") or []
    if receivers:
        lines.append(
            f"path patching into {', '.join(map(str, receivers))}: each sender head's "
            "effect through these receivers only (every other head frozen at the base run)"
        )
    cells = top_cells(ds, top, metric, min_prompts=min_prompts)
    need, left_out = cells.attrs["min_prompts"], cells.attrs["left_out"]
    what = "AtP's estimated effect" if estimate else "effect"
    lines.append(
        f"top cells by |{what}| on {metric} ({sc.intervention}): the cell's value minus each "
        f"prompt's own {base} baseline, averaged over the n prompts that reach the cell; "
        f"{sc.kind} = {sc.label} (cells that fewer than {need} of the {n} prompts reach are "
        f"left out: {left_out}):"
    )
    for _, r in cells.iterrows():
        lines.append(
            f"  {_cell(r)}: {'estimated ' if estimate else ''}effect {r['effect']:+.3f}, "
            f"{sc.kind} {r['scaled']:+.2f} (value {r['value']:.3f}, n={int(r['n'])})"
        )
    checked = verified(ds, metric) if estimate else None
    if checked is not None and len(checked):
        lines.append(
            f"verified by exact patching ({len(checked)} cells; effects on {metric}, mean over "
            "the same prompts), AtP's estimate beside the exact value:"
        )
        for _, row in checked.iterrows():
            lines.append(
                f"  {_cell(row)}: estimate {row['estimate']:+.3f}, exact {row['exact']:+.3f} "
                f"(n={int(row['n'])})"
            )
        lines.append(_correlation(checked, "cells"))
    return lines


def _edge_lines(ds: xr.Dataset, top: int, metric: str, min_prompts: int | None) -> list[str]:
    edges = top_edges(ds, top, metric, min_prompts=min_prompts)
    sc, n = scale(ds), ds.sizes["prompt"]
    what = f"{sc.intervention.split(' ')[0]}'s estimated effect" if is_estimate(ds) else "effect"
    patched = "estimated with the edge patched" if is_estimate(ds) else "with the edge patched"
    lines = [
        f"top edges by |{what}| on {metric} ({sc.intervention}): the metric {patched} "
        f"minus each prompt's own {base_run(ds)} baseline, averaged over the n "
        f"prompts; {sc.kind} = {sc.label} (edges that fewer than {edges.attrs['min_prompts']} "
        f"of the {n} prompts reach are left out: {edges.attrs['left_out']}):"
    ]
    for _, r in edges.iterrows():
        at = f" at pos {r['pos']}" if "pos" in r else ""
        lines.append(
            f"  {r['sender']} -> {r['receiver']}{at}: effect {r['effect']:+.3f}, "
            f"{sc.kind} {r['scaled']:+.2f} (value {r['value']:.3f}, n={int(r['n'])})"
        )
    checked = verified_edges(ds, metric) if is_estimate(ds) else None
    if checked is not None and len(checked):
        lines.append(
            f"verified by exact edge patching ({len(checked)} edges; effects on {metric}, mean "
            "over the same prompts), the estimate beside the exact value:"
        )
        for _, row in checked.iterrows():
            at = f" at pos {row['pos']}" if "pos" in row else ""
            lines.append(
                f"  {row['sender']} -> {row['receiver']}{at}: estimate {row['estimate']:+.3f}, "
                f"exact {row['exact']:+.3f} (n={int(row['n'])})"
            )
        lines.append(_correlation(checked, "edges"))
    return lines


def _correlation(checked: Any, what: str) -> str:
    r = checked.attrs["correlation"]
    if not math.isfinite(r):
        return "correlation of estimate and exact: needs at least two verified " + what
    return f"correlation of estimate and exact over these {len(checked)} {what}: r = {r:.3f}"


def _cell(r: Any) -> str:
    """``z[layer=0, head=3]``: a table row's component and coordinates."""
    where = [f"layer={int(r['layer'])}"]
    where += [f"{d}={r[d]}" for d in DIMS if d in r and r.notna()[d]]
    return f"{r['component']}[{', '.join(where)}]"
