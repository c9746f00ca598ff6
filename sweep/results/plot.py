"""Pictures of a results store: a heatmap per component (PNG) and one HTML page.

    python -m sweep.plot STORE [--out DIR] [--metric NAME] [--min-prompts N]

Each heatmap shows each cell on its intervention's own scale, over the prompts that reach
it (``sweep.results.analysis.scaled``): denoising, the fraction of the clean behaviour the
cell restores (0 = the corrupted run, 1 = clean); noising and ablations, the fraction it
destroys (0 = no change, 1 = the corrupted run's level). The title names the intervention
and the scale; AtP maps say they are estimates. Layer x
position maps label positions with prompt 0's tokens (clean/corrupted where they differ;
-1 is each prompt's own last token); layer x head maps label heads (grouped-query ``k``/``v``:
key/value heads, ``KV0``...); components with both (``z_by_pos``, ``k_by_pos``...) get one
row per layer and head. The HTML page holds every component and metric in one
self-contained file (no network), switchable and with values on hover.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sweep.errors import StoreDamagedError, SweepError
from sweep.results.analysis import (
    Scale,
    check_metric,
    components,
    default_min_prompts,
    edge_variables,
    gap_warning,
    metrics,
    reached,
    scale,
    scaled,
)
from sweep.results.store import open_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heatmap:
    """What one picture shows: values [rows, columns] with labelled axes."""

    component: str
    metric: str
    values: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    row_title: str
    col_title: str
    blank: str = ""
    """Which cells are left blank, and why (cells few prompts reach); '' when none are."""
    scale: Scale = Scale("restored", "patch denoise")
    warning: str = ""
    """A tiny or inverted clean-corrupted gap (``gap_warning``); '' when none."""

    @property
    def title(self) -> str:
        what = f"{self.scale.short} by {self.scale.intervention}"
        estimate = " (estimate)" if self.scale.intervention.startswith("AtP") else ""
        return f"{self.component}: {self.metric}, {what}{estimate}"


def heatmap(ds: xr.Dataset, name: str, metric: str, min_prompts: int | None = None) -> Heatmap:
    """``name`` on its intervention's own scale (over the prompts that reach each cell) as a 2-D
    map; cells that fewer than ``min_prompts`` prompts reach (default: half) are blank."""
    need = default_min_prompts(ds) if min_prompts is None else int(min_prompts)
    mean = scaled(ds, name, metric=metric)
    n = reached(ds, name)
    few = int(((n > 0) & (n < need)).sum())
    mean = mean.where(n >= need)
    total = int(ds.sizes["prompt"])
    blank = f"{few} cells that fewer than {need} of the {total} prompts reach" if few else ""
    if "receiver" in mean.dims:  # an edge sweep: pairs that are not edges stay blank
        rows, cols = ([str(x) for x in ds[d].values] for d in ("receiver", "sender"))
        col_title = "sender"
        if "pos" in mean.dims:  # one position at a time: a column per sender and position
            tokens, _ = _position_labels(ds)
            cols = [f"{c} @{t}" for c in cols for t in tokens]
            col_title = "sender @ position"
        values = mean.transpose("receiver", "sender", ...).values.reshape(len(rows), -1)
        return Heatmap(name, metric, values, rows, cols, "receiver", col_title, blank,
                       scale(ds), gap_warning(ds, metric))  # fmt: skip
    layers = [f"L{int(x)}" for x in ds["layer"].values]
    # Grouped-query k/v are indexed by key/value head, not by query head.
    head = next((d for d in ("head", "kv_head") if d in mean.dims), None)
    prefix = "KV" if head == "kv_head" else "H"
    heads = [f"{prefix}{int(h)}" for h in ds[head].values] if head is not None else []
    if "pos" in mean.dims:
        cols, col_title = _position_labels(ds)
    else:
        cols, col_title = heads, head or ""
    if "pos" in mean.dims and head is not None:
        values = mean.transpose("layer", head, "pos").values.reshape(-1, len(cols))
        rows = [f"{la}{h}" for la in layers for h in heads]
        return Heatmap(name, metric, values, rows, cols, f"layer, {head}", col_title, blank,
                       scale(ds), gap_warning(ds, metric))  # fmt: skip
    values = mean.transpose("layer", ...).values
    return Heatmap(name, metric, values, layers, cols, "layer", col_title, blank, scale(ds),
                   gap_warning(ds, metric))  # fmt: skip


def _position_labels(ds: xr.Dataset) -> tuple[list[str], str]:
    """Column labels of a position axis and its title. Named positions are their names;
    a token index shows its token in the first prompt that has it (clean/corrupted where
    they differ), so a position past prompt 0's end is labelled too."""
    if ds["pos"].dtype.kind not in "iu":  # names (str, object or numpy StringDType)
        return [str(p) for p in ds["pos"].values], "named position (in each prompt)"
    clean = ds["clean_token"].values
    corrupted = ds["corrupted_token"].values
    out = []
    for j, p in enumerate(ds["pos"].values):
        has = np.flatnonzero(clean[:, j] != "")
        i = int(has[0]) if len(has) else 0
        a, b = clean[i, j], corrupted[i, j]
        tok = str(a) if a == b else f"{a}/{b}"
        out.append(f"{int(p)}:{tok}" + (f" (#{i})" if i else ""))
    return out, "position (tokens of prompt 0, else of #N, the first prompt that has it)"


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
    image = ax.imshow(h.values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
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
    fig.colorbar(image, ax=ax).set_label(h.scale.bar, fontsize=8)
    fig.tight_layout()
    return fig


def render(
    store: str | Path,
    out: str | Path | None = None,
    metric: str | None = None,
    min_prompts: int | None = None,
) -> Path:
    """Write ``{component}.png`` (for ``metric``, default the first) and ``index.html``
    (every metric) into ``out`` (default: next to the store, ``STORE.plots``; for a URL
    store, ``NAME.plots`` in the working directory). Cells that fewer than
    ``min_prompts`` prompts reach (default: half) are blank, and each map says so."""
    ds = load(store)
    metric = check_metric(ds, metric)
    out_dir = Path(out) if out is not None else _default_out(store)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"--out: cannot create {out_dir} ({e.strerror})") from None
    names = components(ds) + edge_variables(ds)
    for name in names:
        fig = figure(heatmap(ds, name, metric, min_prompts))
        fig.savefig(out_dir / f"{name}.png", dpi=110)
        fig.clf()
    maps = [heatmap(ds, n, m, min_prompts) for n in names for m in metrics(ds)]
    extra = _edge_graph(ds, out_dir, metric, min_prompts) if edge_variables(ds) else ""
    (out_dir / "index.html").write_text(page(maps, str(store), extra), encoding="utf-8")
    return out_dir


def _edge_graph(ds: xr.Dataset, out_dir: Path, metric: str, min_prompts: int | None) -> str:
    """The top edges drawn by Graphviz (``edges_graph.svg`` and ``.png``), as the page's
    HTML; without Graphviz's ``dot``, the page and the log say how to get it."""
    from sweep.results.edge_graph import edge_graph, render_graph

    try:
        svg = render_graph(edge_graph(ds, metric=metric, min_prompts=min_prompts),
                           str(out_dir / "edges_graph"))  # fmt: skip
    except SweepError as e:
        log.warning("%s", e)
        return f'<h2>Top edges</h2><p class="missing">{html.escape(str(e))}</p>'
    return f'<h2>Top edges</h2><div id="edge-graph">{svg}</div>'


def load(store: str | Path) -> xr.Dataset:
    """The whole store in memory; a chunk whose bytes are damaged is one line, pointing
    at ``sweep.status --verify``."""
    ds = open_results(store)
    try:
        return ds.load()
    except Exception as e:  # a codec's own error type: zstd, blosc, ...
        raise StoreDamagedError(
            f"STORE: a chunk of {store} cannot be read ({type(e).__name__}); run "
            f"python -m sweep.status {store} --verify, then the sweep's command to recompute it"
        ) from None


def _default_out(store: str | Path) -> Path:
    """Next to a local store; for a URL store, in the working directory."""
    if "://" in str(store):
        return Path.cwd() / Path(str(store).rstrip("/").rsplit("/", 1)[-1]).with_suffix(".plots")
    return Path(store).with_suffix(".plots")


def page(maps: list[Heatmap], store: str, extra: str = "") -> str:
    """One self-contained HTML page; a metric selector redraws every map. ``extra``: HTML
    after the maps (an edge store's drawn top edges)."""
    data = [
        {
            "component": h.component,
            "metric": h.metric,
            "rows": h.row_labels,
            "cols": h.col_labels,
            "rowTitle": h.row_title,
            "colTitle": h.col_title,
            "blank": h.blank,
            "title": h.title,
            "scale": h.scale.label,
            "warning": h.warning,
            "values": [[None if np.isnan(v) else round(float(v), 4) for v in r] for r in h.values],
        }
        for h in maps
    ]
    return (
        _TEMPLATE.replace("__STORE__", html.escape(store))
        .replace("__EXTRA__", extra)
        .replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    )


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>patchsweep: __STORE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; }
table.map { border-collapse: collapse; margin: 0.5em 0 1.5em; }
table.map td, table.map th { padding: 2px 4px; font-size: 11px; }
table.map td.v { width: 26px; height: 20px; }
th.col { writing-mode: vertical-rl; transform: rotate(180deg); font-weight: normal; }
</style></head>
<body>
<h1>patchsweep results</h1>
<p>Store: <code>__STORE__</code>. Each cell on its intervention's own scale, over the
prompts that reach it: denoising, the fraction of the clean behaviour restored,
(patched - corrupted) / (clean - corrupted); noising and ablations, the fraction destroyed,
(clean - patched) / (clean - corrupted). 0 is no change either way; hover a cell for its
value.</p>
<label>metric <select id="metric"></select></label>
<div id="maps"></div>
__EXTRA__
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const maps = JSON.parse(document.getElementById("data").textContent);
const metrics = [...new Set(maps.map(m => m.metric))];
const select = document.getElementById("metric");
for (const m of metrics) {
  const o = document.createElement("option");
  o.textContent = m;
  select.append(o);
}
function colour(v, limit) {
  if (v === null) return "#ddd";
  const t = Math.max(-1, Math.min(1, v / limit));
  const c = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? `rgb(${c},${c},255)` : `rgb(255,${c},${c})`;
}
function draw() {
  const root = document.getElementById("maps");
  root.replaceChildren();
  for (const m of maps.filter(x => x.metric === select.value)) {
    const flat = m.values.flat().filter(v => v !== null);
    const limit = Math.max(1e-9, ...flat.map(Math.abs));
    const h = document.createElement("h2");
    h.textContent = `${m.title} (${m.rowTitle} x ${m.colTitle})`;
    const scale = document.createElement("p");
    scale.className = "scale";
    scale.textContent = `Blue: ${m.scale}.` + (m.warning ? ` ${m.warning}.` : "");
    const note = document.createElement("p");
    note.className = "blank";
    note.textContent = m.blank ? `Grey: ${m.blank} (too few to average).` : "";
    const table = document.createElement("table");
    table.className = "map";
    table.dataset.component = m.component;
    const head = table.insertRow();
    head.insertCell().textContent = "";
    for (const c of m.cols) {
      const th = document.createElement("th");
      th.className = "col";
      th.textContent = c;
      head.append(th);
    }
    m.values.forEach((row, i) => {
      const tr = table.insertRow();
      const th = document.createElement("th"); th.textContent = m.rows[i]; tr.append(th);
      row.forEach((v, j) => {
        const td = tr.insertCell();
        td.className = "v";
        td.style.background = colour(v, limit);
        const none = "none (not computed, or too few prompts)";
        td.title = `${m.rows[i]}, ${m.cols[j]}: ${v === null ? none : v}`;
      });
    });
    root.append(h, scale, note, table);
  }
  document.body.dataset.rendered = String(root.querySelectorAll("table.map").length);
}
select.addEventListener("change", draw);
draw();
</script>
</body></html>
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sweep.plot", description=__doc__.split("\n")[0])
    p.add_argument("store")
    p.add_argument("--out", default=None, help="output directory (default: STORE.plots)")
    p.add_argument("--metric", default=None, help="metric of the PNGs (default: the first)")
    p.add_argument(
        "--min-prompts",
        type=int,
        default=None,
        help="leave blank the cells fewer prompts reach (default: half of them)",
    )
    args = p.parse_args(argv)
    try:
        out = render(args.store, args.out, args.metric, args.min_prompts)
    except (SweepError, ValueError) as e:
        print(f"patchsweep: error: {e}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    print(f"pictures: {out}/index.html and one PNG per component")  # noqa: T201


if __name__ == "__main__":
    main()
