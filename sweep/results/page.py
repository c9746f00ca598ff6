"""The HTML page of a store: every map as a plotly figure, in one file that opens offline.

The page holds the run's config and baselines, every component's map (plotly's own HTML,
plotly.js inlined once), a metric selector and a prompt selector (the mean, the spread,
each prompt), the top cells as the command line prints them, and for edge stores the
drawn top edges. Prompt maps are embedded for the first prompts up to ``PROMPT_VALUES``
values in all, so a store of a thousand prompts stays a page that opens in seconds; the
page says which prompts it holds and how to draw any other.
"""

from __future__ import annotations

import html
import json
from typing import Any

import xarray as xr

from sweep.results.analysis import edge_variables, metrics, scale
from sweep.results.figures import figure, layout_of, trace_of
from sweep.results.maps import heatmap, variables
from sweep.results.report import baseline_lines, results_lines

PROMPT_VALUES = 1_000_000
"""Values of per-prompt maps a page embeds at most (all maps and metrics together)."""


def page(ds: xr.Dataset, store: str, extra: str = "", min_prompts: int | None = None) -> str:
    """The page's HTML. ``extra``: HTML after the maps (an edge store's drawn top edges)."""
    from plotly.offline import get_plotlyjs

    names, ms = variables(ds), metrics(ds)
    n = int(ds.sizes["prompt"])
    first = {name: heatmap(ds, name, ms[0], min_prompts) for name in names}
    cells = sum(h.values.size for h in first.values())
    shown = max(1, min(n, PROMPT_VALUES // max(1, cells * len(ms))))
    some = ds.isel(prompt=slice(0, shown))  # per-prompt values of these prompts only
    views = {"mean": {}, "std": {"spread": True}} | {f"p{i}": {"prompt": i} for i in range(shown)}
    maps, divs = [], []
    for k, name in enumerate(names):
        div = f"map-{k}"
        maps.append({"id": div, "component": name, **_map_data(ds, some, name, views, min_prompts)})
        fig = figure(first[name]).to_html(
            full_html=False, include_plotlyjs=False, div_id=div,
            config={"displaylogo": False, "responsive": True},
        )  # fmt: skip
        divs.append(f'<section class="map" data-component="{html.escape(name)}">{fig}</section>')
    labels = [
        ["mean", f"mean over the prompts (of {n})"],
        ["std", f"spread: std over the prompts (of {n})"],
    ]
    labels += [[f"p{i}", f"prompt {i}"] for i in range(shown)]
    held = (
        f"This page holds the maps of every prompt ({n})."
        if shown == n
        else f"This page holds prompts 0-{shown - 1} of {n}; draw any other with "
        f"sweep.figures.heatmap({store!r}, COMPONENT, prompt=I) or "
        f"python -m sweep.plot {store} --prompt I."
    )
    data = {"metrics": ms, "views": labels, "maps": maps}
    top = "\n".join(results_lines(ds, min_prompts=min_prompts))  # as the command line
    return _PAGE.format(
        store=html.escape(store),
        plotly=get_plotlyjs(),
        scale=html.escape(scale(ds).label),
        baselines=_baselines(ds),
        config=html.escape(str(ds.attrs.get("config", "(not recorded)"))),
        held=html.escape(held),
        maps="\n".join(divs),
        top=html.escape(top),
        what="edges" if edge_variables(ds) else "cells",
        extra=extra,
        data=json.dumps(data, separators=(",", ":")).replace("</", "<\\/"),
        script=_SCRIPT,
    )


def _map_data(
    ds: xr.Dataset, some: xr.Dataset, name: str, views: dict, min_prompts: int | None
) -> dict[str, Any]:
    """What the selectors switch one map to: per metric and view its trace's values,
    colours and title; per view its position axis (a prompt's own tokens), if it has one."""
    values: dict[str, dict[str, Any]] = {}
    axes: dict[str, Any] = {}
    for metric in metrics(ds):
        values[metric] = {}
        for view, kw in views.items():
            h = heatmap(some if "prompt" in kw else ds, name, metric, min_prompts, **kw)
            trace, layout = trace_of(h), layout_of(h)
            one = {key: v for key, v in trace.items() if key not in ("x", "y")}
            values[metric][view] = {**one, "title": layout["title"]["text"]}
            if "pos" in ds[name].dims and view != "std" and view not in axes:
                ticks = {t: layout["xaxis"][t] for t in ("tickvals", "ticktext")}
                axes[view] = {"x": trace["x"], **ticks}
    return {"values": values, "axes": axes or None}


def _baselines(ds: xr.Dataset) -> str:
    rows = "".join(f"<li>{html.escape(line)}</li>" for line in baseline_lines(ds))
    return f'<ul id="baselines">{rows}</ul>'


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>patchsweep: {store}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; max-width: 1700px; }}
pre {{ background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; font-size: 12px; }}
.controls {{ position: sticky; top: 0; background: white; padding: 0.5em 0; z-index: 10; }}
.controls label {{ margin-right: 1.5em; }}
section.map {{ margin: 1em 0 2em; }}
</style>
<script>{plotly}</script>
</head>
<body>
<h1>patchsweep results</h1>
<p>Store: <code>{store}</code>. Maps show each cell on its intervention's own scale: {scale};
a mean is over the prompts that reach the cell. Hover a cell for its coordinates, tokens and
value; drag to zoom, double-click to reset.</p>
<h2>Baselines</h2>
{baselines}
<details><summary>Config of the run</summary><pre id="config">{config}</pre></details>
<div class="controls">
<label>metric <select id="metric"></select></label>
<label>prompts <select id="view"></select></label>
<span id="held">{held}</span>
</div>
{maps}
<h2>Top {what}, as the command line prints them</h2>
<pre id="top">{top}</pre>
{extra}
<script id="data" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""

_SCRIPT = """
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const metric = document.getElementById("metric"), view = document.getElementById("view");
for (const m of data.metrics) metric.add(new Option(m, m));
for (const [v, label] of data.views) view.add(new Option(label, v));
function show() {
  for (const map of data.maps) {
    const gd = document.getElementById(map.id);
    const one = map.values[metric.value][view.value];
    const style = {};
    for (const [k, v] of Object.entries(one)) if (k !== "title") style[k] = [v];
    const layout = {"title.text": one.title};
    const axes = map.axes && (map.axes[view.value] || map.axes.mean);
    if (axes) {
      style.x = [axes.x];
      layout["xaxis.tickvals"] = axes.tickvals;
      layout["xaxis.ticktext"] = axes.ticktext;
    }
    Plotly.restyle(gd, style);
    Plotly.relayout(gd, layout);
  }
  const graphs = [...document.querySelectorAll(".js-plotly-plot")];
  document.body.dataset.shown = metric.value + "|" + view.value;
  document.body.dataset.rendered = String(graphs.length);
  document.body.dataset.firstRows = JSON.stringify(graphs.map(g => g.data[0].z[0]));
  document.body.dataset.titles = JSON.stringify(graphs.map(g => g.layout.title.text));
  document.body.dataset.requests = JSON.stringify(
    performance.getEntriesByType("resource").map(e => e.name));
  document.body.dataset.readyMs = String(Math.round(performance.now()));
}
metric.addEventListener("change", show);
view.addEventListener("change", show);
window.addEventListener("load", () => {
  // A link can open a view: index.html#metric=NAME&view=p3 (the selectors' values).
  const want = new URLSearchParams(location.hash.slice(1));
  if (want.has("metric")) metric.value = want.get("metric");
  if (want.has("view")) view.value = want.get("view");
  show();
});
"""
