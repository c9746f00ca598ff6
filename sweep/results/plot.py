"""Pictures of a results store: a PNG per component (matplotlib) and one HTML page (plotly).

    python -m sweep.plot STORE [--out DIR] [--metric NAME] [--prompt N] [--min-prompts N]

Each map shows each cell on its intervention's own scale, over the prompts that reach it
(``sweep.results.analysis.scaled``): denoising, the fraction of the clean behaviour the
cell restores (0 = the corrupted run, 1 = clean); noising and ablations, the fraction it
destroys (0 = no change, 1 = the corrupted run's level). The title names the intervention,
the scale and the prompts; AtP maps say they are estimates. Layer x position maps label
positions with prompt 0's tokens (clean/corrupted where they differ); layer x head maps
label heads (grouped-query ``k``/``v``: key/value heads, ``KV0``...); components with both
(``z_by_pos``, ``k_by_pos``...) get one row per layer and head. The page
(``sweep.results.page``) holds every component and metric in one file that opens offline.
"""

from __future__ import annotations

import argparse
import html
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sweep.errors import SweepError
from sweep.results.analysis import check_metric, edge_variables
from sweep.results.faithfulness import is_circuit
from sweep.results.maps import Heatmap, check_finished, check_prompt, heatmap, variables
from sweep.store.read import open_dataset

log = logging.getLogger(__name__)

__all__ = ["Heatmap", "figure", "heatmap", "main", "render"]


MAX_TICKS = 80


def figure(h: Heatmap, ax: Any = None) -> Any:
    """The map as a matplotlib Figure, diverging colours centred on 0; drawn into ``ax``
    when given (a notebook's own axes), else into a new Figure. Never touches pyplot or the
    backend, so a notebook's inline or widget backend stays as it is."""
    from matplotlib.figure import Figure

    rows, cols = h.values.shape
    if ax is None:
        size = (min(40.0, max(4.0, 0.45 * cols + 2.5)), min(40.0, max(3.2, 0.4 * rows + 1.5)))
        ax = Figure(figsize=size).subplots()
    fig = ax.figure
    limit = float(np.nanmax(np.abs(h.values))) if np.isfinite(h.values).any() else 1.0
    limit = limit or 1.0
    low, cmap = (-limit, "RdBu") if h.diverging else (0.0, "Blues")
    image = ax.imshow(h.values, cmap=cmap, vmin=low, vmax=limit, aspect="auto")
    # At most about MAX_TICKS labels per axis (every k-th), so a large map stays readable.
    every = [max(1, -(-n // MAX_TICKS)) for n in (cols, rows)]
    ax.set_xticks(range(0, cols, every[0]), h.col_labels[:: every[0]], rotation=60, ha="right",
                  fontsize=8)  # fmt: skip
    ax.set_yticks(range(0, rows, every[1]), h.row_labels[:: every[1]], fontsize=8)
    ax.set_xlabel(h.col_title)
    ax.set_ylabel(h.row_title)
    title = textwrap.wrap(h.title, max(40, 6 * cols + 20))
    title += textwrap.wrap(f"(blank: {h.blank})", max(40, 6 * cols + 20)) if h.blank else []
    ax.set_title("\n".join(title), fontsize=10)
    fig.colorbar(image, ax=ax).set_label(h.bar, fontsize=8)
    fig.tight_layout()
    return fig


def render(
    store: str | Path,
    out: str | Path | None = None,
    metric: str | None = None,
    min_prompts: int | None = None,
    prompt: int | None = None,
) -> Path:
    """Write ``{component}.png`` (for ``metric``, default the first; the mean over prompts,
    or ``prompt``'s own map) and ``index.html`` (every metric, the mean, the spread and
    each prompt) into ``out`` (default: next to the store, ``STORE.plots``; for a URL
    store, ``NAME.plots`` in the working directory). Cells that fewer than ``min_prompts``
    prompts reach (default: half) are blank in the means, and each map says so."""
    from sweep.results.page import page

    ds = open_dataset(store, in_memory=True)
    out_dir = Path(out) if out is not None else _default_out(store)
    if is_circuit(ds):
        return render_many([store], out_dir, metric)
    metric = check_metric(ds, metric)
    prompt = check_prompt(ds, prompt)
    check_finished(ds, str(store))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"--out: cannot create {out_dir} ({e.strerror})") from None
    for name in variables(ds):
        fig = figure(heatmap(ds, name, metric, min_prompts, prompt=prompt))
        fig.savefig(out_dir / f"{name}.png", dpi=110)
        fig.clf()
    extra = _edge_graph(ds, out_dir, metric, min_prompts) if edge_variables(ds) else ""
    text = page(ds, str(store), extra, min_prompts)
    (out_dir / "index.html").write_text(text, encoding="utf-8")
    return out_dir


def render_many(stores: list[str | Path], out: Path, metric: str | None = None) -> Path:
    """Circuit stores: one faithfulness picture of them all (a line per store), the first
    one's circuit drawn, and a page (``sweep.results.faithfulness_figures``)."""
    from sweep.results.faithfulness_figures import render_circuits

    for store in stores:
        if not is_circuit(open_dataset(store)):
            raise SweepError(
                f"STORE: {store} is not a circuit store; several stores are drawn together "
                "only as faithfulness curves of circuit stores (python -m sweep.circuit)"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"--out: cannot create {out} ({e.strerror})") from None
    return render_circuits([str(s) for s in stores], out, metric)


def _edge_graph(ds: xr.Dataset, out_dir: Path, metric: str, min_prompts: int | None) -> str:
    """The top edges drawn by Graphviz (``edges_graph.svg`` and ``.png``), as the page's
    HTML; without Graphviz's ``dot``, the page and the log say how to get it."""
    from sweep.results.edge_graph import edge_graph, render_graph

    try:
        svg = render_graph(edge_graph(ds, metric=metric, min_prompts=min_prompts),
                           str(out_dir / "edges_graph"))  # fmt: skip
    except SweepError as e:
        log.warning("%s", e)
        return f'<h2>The top edges as a circuit</h2><p class="missing">{html.escape(str(e))}</p>'
    return f'<h2>The top edges as a circuit</h2><div id="edge-graph">{svg}</div>'


def _default_out(store: str | Path) -> Path:
    """Next to a local store; for a URL store, in the working directory."""
    if "://" in str(store):
        return Path.cwd() / Path(str(store).rstrip("/").rsplit("/", 1)[-1]).with_suffix(".plots")
    return Path(store).with_suffix(".plots")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sweep.plot", description=__doc__.split("\n")[0])
    p.add_argument("store", nargs="+", help="a store; or several circuit stores, drawn as "
                   "one faithfulness picture (a line per store)")  # fmt: skip
    p.add_argument("--out", default=None, help="output directory (default: STORE.plots)")
    p.add_argument("--metric", default=None, help="metric of the PNGs (default: the first)")
    p.add_argument(
        "--prompt",
        type=int,
        default=None,
        help="draw the PNGs of this prompt (default: the mean over prompts)",
    )
    p.add_argument(
        "--min-prompts",
        type=int,
        default=None,
        help="leave blank the cells fewer prompts reach (default: half of them)",
    )
    args = p.parse_args(argv)
    try:
        if len(args.store) > 1:
            out = render_many(args.store, Path(args.out or _default_out(args.store[0])),
                              args.metric)  # fmt: skip
        else:
            out = render(args.store[0], args.out, args.metric, args.min_prompts, args.prompt)
    except (SweepError, ValueError) as e:
        print(f"patchsweep: error: {e}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    print(f"pictures: {out}/index.html and PNGs in {out}")  # noqa: T201


if __name__ == "__main__":
    main()
