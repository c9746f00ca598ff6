"""Pictures of circuit stores: the faithfulness curve (one line per scoring method) and
the circuit drawn as a graph.

    import sweep.figures as sf
    sf.faithfulness(["exact.circuit.zarr", "eap.circuit.zarr", "eapig.circuit.zarr"])

``python -m sweep.plot A.circuit.zarr [B.circuit.zarr ...]`` writes ``faithfulness.png``,
``circuit_graph.svg``/``.png`` (the first store's smallest circuit that reaches
``FAITHFUL``) and an ``index.html`` that opens offline.
"""

from __future__ import annotations

import html
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sweep.errors import SweepError
from sweep.results.analysis import check_metric
from sweep.results.faithfulness import (
    FAITHFUL,
    ablation,
    check_circuit,
    circuit_edges,
    circuit_lines,
    drawn_size,
    faithfulness,
    label,
    method,
    scored,
)

DASHES = ("solid", "dash", "dot", "dashdot")
"""One per line, so lines that coincide stay visible."""
MAX_DRAWN = 100
"""Edges drawn at most: a larger circuit is drawn as its top edges, and says so."""

Source = str | os.PathLike[str] | xr.Dataset


def _open(sources: Source | Sequence[Source]) -> list[xr.Dataset]:
    from sweep.results.figures import open_source

    listed: list[Source] = list(sources) if isinstance(sources, (list, tuple)) else [sources]  # type: ignore[list-item]
    out = [open_source(s) for s in listed]
    for ds in out:
        check_circuit(ds)
    return out


def curves(sources: Source | Sequence[Source], metric: str | None = None) -> list[dict[str, Any]]:
    """Per store: its label (ranking and ablation), sizes (the empty circuit left out: 0
    by definition, and not on a log axis), faithfulness and the edges each circuit holds,
    for the figures."""
    out = []
    datasets = _open(sources)
    names = [label(ds) for ds in datasets]
    for k, ds in enumerate(datasets):
        f = faithfulness(ds, metric)
        name = names[k] if names.count(names[k]) == 1 else f"{names[k]} ({k + 1})"
        sizes = f["size"].values
        keep = sizes > 0
        held = ds["size_edges"].values if "size_edges" in ds.coords else sizes
        out.append({
            "name": name, "sizes": sizes[keep].tolist(), "values": f.values[keep].tolist(),
            "held": [int(h) for h in np.asarray(held)[keep]],
            "n": int(ds.sizes["prompt"]), "metric": check_metric(ds, metric),
            "ablation": ablation(ds), "total": int(sizes[-1]),
            "empty": f.attrs["empty"], "full": f.attrs["full"],
        })  # fmt: skip
    return out


def title(lines: list[dict[str, Any]]) -> str:
    """What every line shares (the metric, the prompts, the ablation when one), and a
    note when their empty or full circuits differ (each line is relative to its own)."""
    n = sorted({c["n"] for c in lines})
    metrics = sorted({c["metric"] for c in lines})
    ablations = sorted({c["ablation"] for c in lines})
    carry = (f"edges outside carry {ablations[0]}" if len(ablations) == 1
             else "each line's ablation in its legend")  # fmt: skip
    text = (
        f"faithfulness on {'/'.join(metrics)} of the top-K edge circuits: (circuit - empty) / "
        f"(full - empty), means over all {'/'.join(map(str, n))} prompts; {carry}"
    )
    ends = [(c["empty"], c["full"]) for c in lines]
    scale = max(1.0, *(abs(v) for e in ends for v in e))
    spread = max(abs(a - b) for e in ends for a, b in zip(e, ends[0], strict=True))
    if len(lines) > 1 and spread > 1e-3 * scale:
        listed = "; ".join(f"{c['name'].split(';')[0]}: {c['empty']:.2f} / {c['full']:.2f}"
                           for c in lines)  # fmt: skip
        text += (f". Note: the lines' empty / full means differ ({listed}): each is relative "
                 "to its own ends")  # fmt: skip
    return text


def faithfulness_figure(sources: Source | Sequence[Source], metric: str | None = None) -> Any:
    """A plotly Figure: faithfulness against circuit size (log axis, ticks at the stored
    sizes), one line per store, named by its ranking and ablation."""
    import plotly.graph_objects as go

    lines = curves(sources, metric)
    fig = go.Figure()
    for k, c in enumerate(lines):
        fig.add_trace(go.Scatter(
            x=c["sizes"], y=[None if np.isnan(v) else round(v, 4) for v in c["values"]],
            customdata=c["held"], mode="lines+markers", name=c["name"],
            line={"dash": DASHES[k % len(DASHES)]},
            hovertemplate=f"{html.escape(c['name'])}<br>top %{{x}} edges (%{{customdata}} in "
            "the circuit)<br>faithfulness %{y:.3f}<extra></extra>",
        ))  # fmt: skip
    fig.add_hline(y=FAITHFUL, line_dash="dot", line_color="#888")
    sizes = sorted({x for c in lines for x in c["sizes"]})
    fig.update_layout(
        title={"text": "<br>".join(textwrap.wrap(title(lines), 110)), "font": {"size": 13}},
        xaxis={"title": {"text": "circuit size K (the top K edges; log scale)"}, "type": "log",
               "tickmode": "array", "tickvals": sizes, "ticktext": [str(x) for x in sizes]},
        yaxis={"title": {"text": "faithfulness (0 = every edge ablated, 1 = full model)"}},
        template="plotly_white", legend={"title": {"text": "edges ranked by; ablated"}},
    )  # fmt: skip
    return fig


def faithfulness_png(
    sources: Source | Sequence[Source], path: Path, metric: str | None = None
) -> None:
    """The same curve with matplotlib, for a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = curves(sources, metric)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = [("o", "-", 7), ("s", "--", 6), ("^", ":", 5), ("D", "-.", 4)]
    for k, c in enumerate(lines):  # lines that coincide stay visible: markers and dashes
        marker, dash, size = styles[k % len(styles)]
        ax.plot(c["sizes"], c["values"], marker=marker, linestyle=dash, markersize=size,
                label=c["name"])  # fmt: skip
    ax.axhline(FAITHFUL, color="#888", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    sizes = sorted({x for c in lines for x in c["sizes"]})
    ax.set_xticks(sizes, [str(x) for x in sizes], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("circuit size K (the top K edges; log scale)")
    ax.set_ylabel("faithfulness (0 = every edge ablated, 1 = full model)")
    ax.set_title("\n".join(textwrap.wrap(title(lines), 90)), fontsize=9)
    ax.legend(title="edges ranked by; ablated", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def caption(ds: xr.Dataset, metric: str | None = None) -> tuple[int, str]:
    """The circuit to draw (``drawn_size``, at most ``MAX_DRAWN`` edges) and its caption."""
    size, why = drawn_size(ds, metric)
    f = faithfulness(ds, metric)
    value = float(f.sel(size=size)) if size in f["size"].values else float("nan")
    held = len(circuit_edges(ds, size))
    drawn = min(held, MAX_DRAWN)
    top = f"; its top {drawn} edges drawn" if drawn < held else ""
    kept = f" ({held} in the circuit)" if held != size else ""
    return size, (
        f"top {size} edges{kept} by {label(ds).split(';')[0]} scores, faithfulness "
        f"{value:.2f} ({why}{top}); {edge_legend(ds)}"
    )


def edge_legend(ds: xr.Dataset) -> str:
    """How the drawn edges read, as the edge store's graph: labels and widths on the scores
    store's own scale, blue where the edge carries the behaviour."""
    if method(ds) == "file":
        return "a file's edges carry no score: drawn alike"
    kind = "restored" if scored(ds) == "patch denoise" else "destroyed"
    return (f"labels and widths: the score as the fraction of the clean behaviour {kind} "
            "(the scores store's scale), blue positive, red negative")  # fmt: skip


def overlap_lines(loaded: list[tuple[str, xr.Dataset]]) -> list[list[str]]:
    """Each further store's circuits against the first's: the edges they share and their
    IoU at every size both hold."""
    from sweep.results.faithfulness import overlap

    out = []
    (a_name, a), rest = loaded[0], loaded[1:]
    for b_name, b in rest:
        table = overlap(a, b)
        lines = [f"overlap of {b_name} with {a_name} (edges in both / in either, IoU):"]
        lines += [f"  {int(r.size):>6}: {int(r.shared)} shared of {int(r.edges_a)} and "
                  f"{int(r.edges_b)}, IoU {r.iou:.2f}" for r in table.itertuples()]  # fmt: skip
        if table.empty:
            lines.append("  no size below the whole graph in both stores")
        out.append(lines)
    return out


def render_circuits(stores: list[str], out_dir: Path, metric: str | None = None) -> Path:
    """``faithfulness.png``, the first store's circuit as ``circuit_graph.svg/png`` and
    ``index.html`` into ``out_dir``."""
    from plotly.offline import get_plotlyjs

    from sweep.results.edge_graph import circuit_graph, render_graph
    from sweep.store.read import open_dataset

    loaded = [(s, open_dataset(s, in_memory=True)) for s in stores]
    datasets = [ds for _, ds in loaded]
    faithfulness_png(datasets, out_dir / "faithfulness.png", metric)
    first = datasets[0]
    size, text = caption(first, metric)
    try:
        svg = render_graph(circuit_graph(first, size, text), str(out_dir / "circuit_graph"))
        graph = f'<div id="circuit-graph">{svg}</div>'
    except SweepError as e:
        graph = f'<p class="missing">{html.escape(str(e))}</p>'
    curve = faithfulness_figure(datasets, metric).to_html(
        full_html=False, include_plotlyjs=False, div_id="faithfulness",
        config={"displaylogo": False, "responsive": True},
    )  # fmt: skip
    reports = "\n\n".join(f"{s}\n" + "\n".join(circuit_lines(ds)) for s, ds in loaded)
    reports += "".join("\n\n" + "\n".join(lines) for lines in overlap_lines(loaded))
    (out_dir / "index.html").write_text(_PAGE.format(
        stores=html.escape(", ".join(stores)), plotly=get_plotlyjs(), curve=curve,
        caption=html.escape(text), graph=graph, report=html.escape(reports),
        config=html.escape(str(first.attrs.get("config", "(not recorded)"))),
    ), encoding="utf-8")  # fmt: skip
    return out_dir


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>patchsweep circuits: {stores}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; max-width: 1400px; }}
pre {{ background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; font-size: 12px; }}
</style>
<script>{plotly}</script>
</head>
<body>
<h1>patchsweep circuits</h1>
<p>Stores: <code>{stores}</code>.</p>
<h2>Faithfulness against circuit size</h2>
{curve}
<h2>The circuit</h2>
<p>{caption}</p>
{graph}
<h2>As the command line prints it</h2>
<pre id="top">{report}</pre>
<details><summary>Config of the (first) run</summary><pre id="config">{config}</pre></details>
</body></html>
"""
