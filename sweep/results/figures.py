"""Plotly figures of a results store, for notebooks and the HTML page.

    import sweep.figures as sf
    sf.heatmap("sweep.zarr", "z")                      # mean over prompts, scaled
    sf.heatmap(ds, "resid_pre", prompt=3, unit="effect")
    ds.patchsweep.heatmap("z_by_pos", spread=True)     # any Dataset from open_results

Each figure is one map (``sweep.results.maps``): a diverging colour scale centred on 0 with
its colour bar, layer 0 at the top, and a hover that says the cell in words (layer, head,
position with its clean and corrupted token) and its value. They display inline in
Jupyter and VS Code (``fig`` as a cell's last line, or ``fig.show()``).
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

import xarray as xr

from sweep.results.maps import UNITS, Heatmap, check_finished, variables
from sweep.results.maps import heatmap as heatmap_of

MAX_TICKS = 64
"""Labels per axis at most (every k-th beyond): the hover names every cell."""


def open_source(source: str | os.PathLike[str] | xr.Dataset) -> xr.Dataset:
    """A store path or URL opened with ``open_results``, or a Dataset as it is."""
    if isinstance(source, xr.Dataset):
        return source
    from sweep.store.read import open_dataset

    return open_dataset(source)


def heatmap(
    source: str | os.PathLike[str] | xr.Dataset,
    component: str,
    *,
    metric: str | None = None,
    prompt: int | None = None,
    spread: bool = False,
    unit: str = "scaled",
    min_prompts: int | None = None,
) -> Any:
    """One component (or edge variable) of a store as a plotly Figure.

    The mean over the prompts that reach each cell (cells fewer than ``min_prompts``
    reach, default half, left blank), or ``prompt``'s own values, or the ``spread`` (std)
    over prompts; ``metric`` (default: the store's first); ``unit``: ``scaled`` (the
    intervention's own scale), ``effect`` (value minus the base run's baseline, in the
    metric's units) or ``value`` (the metric itself)."""
    ds = open_source(source)
    check_finished(ds, str(source) if not isinstance(source, xr.Dataset) else "the store")
    return figure(heatmap_of(ds, component, metric, min_prompts, prompt=prompt, spread=spread,
                             unit=unit))  # fmt: skip


def heatmaps(source: str | os.PathLike[str] | xr.Dataset, **kw: Any) -> dict[str, Any]:
    """Every component's figure (``heatmap``'s keywords), by name."""
    ds = open_source(source)
    return {name: heatmap(ds, name, **kw) for name in variables(ds)}


def figure(h: Heatmap) -> Any:
    """A map as a plotly Figure."""
    import plotly.graph_objects as go

    trace = go.Heatmap(**trace_of(h), hoverongaps=False)
    fig = go.Figure(trace)
    fig.update_layout(**layout_of(h))
    return fig


def trace_of(h: Heatmap) -> dict[str, Any]:
    """The heatmap trace's data: values, the cells in words for the hover, colours."""
    import numpy as np
    from plotly.colors import diverging, make_colorscale, sequential

    label = h.bar.split("\n")[0]
    # Red below 0, blue above (as the PNGs); a spread from 0 (white) to its largest.
    top = float(np.nanmax(h.values)) if np.isfinite(h.values).any() else 1.0
    colours = make_colorscale(diverging.RdBu if h.diverging else sequential.Blues)
    bounds = dict(zauto=True, zmid=0) if h.diverging else dict(zauto=False, zmin=0, zmax=top or 1.0)
    return dict(
        z=rounded(h.values),
        x=h.cols_in_words,
        y=h.rows_in_words,
        colorscale=colours,
        **bounds,
        colorbar=dict(title=dict(text=h.bar.replace("\n", "<br>"), side="right")),
        hovertemplate=f"%{{y}}<br>%{{x}}<br>{label}: %{{z:.4f}}<extra>{h.component}</extra>",
    )


def layout_of(h: Heatmap) -> dict[str, Any]:
    """Title (with blank cells and gap warnings said), axes with short tick labels, and
    a size that gives each cell room."""
    rows, cols = h.values.shape
    notes = [h.view] + [f"blank: {h.blank}"] * bool(h.blank) + [h.warning] * bool(h.warning)
    lines = [h.headline] + [f"<sup>{line}</sup>" for n in notes if n
                            for line in textwrap.wrap(n, 150)]  # fmt: skip
    return dict(
        template="plotly_white",
        title=dict(text="<br>".join(lines), x=0, xanchor="left", font=dict(size=14)),
        xaxis=dict(
            title=dict(text=h.col_title),
            **_ticks(h.cols_in_words, h.col_labels),
            tickangle=-60,
            tickfont=dict(size=9),
        ),  # fmt: skip
        yaxis=dict(
            title=dict(text=h.row_title),
            autorange="reversed",
            **_ticks(h.rows_in_words, h.row_labels),
            tickfont=dict(size=9),
        ),  # fmt: skip
        height=int(min(1400, max(340, 16 * rows + 240))),
        margin=dict(t=70 + 20 * len(lines)),
    )


def _ticks(keys: list[str], labels: list[str]) -> dict[str, Any]:
    every = max(1, -(-len(keys) // MAX_TICKS))
    return dict(tickmode="array", tickvals=keys[::every], ticktext=labels[::every])


def rounded(values: Any) -> list[list[float | None]]:
    """Values as JSON-ready rows, 4 significant digits, blank cells as null: a page of a
    large store stays small and its numbers read the same as the hover's."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    nan = ~np.isfinite(v)
    v = np.where(nan, 0.0, v)
    with np.errstate(divide="ignore"):
        digits = 3 - np.floor(np.log10(np.abs(np.where(v == 0, 1.0, v)))).astype(int)
    # A whole number over a power of ten: the nearest double, whose repr is that short decimal.
    up = np.round(v * 10.0 ** np.maximum(digits, 0)) / 10.0 ** np.maximum(digits, 0)
    down = np.round(v / 10.0 ** np.maximum(-digits, 0)) * 10.0 ** np.maximum(-digits, 0)
    out = np.where(digits >= 0, up, down).astype(object)
    out[nan] = None
    return out.tolist()


__all__ = ["UNITS", "figure", "heatmap", "heatmaps", "layout_of", "open_source", "trace_of"]
