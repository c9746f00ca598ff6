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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sweep.errors import SweepError
from sweep.results.analysis import check_metric
from sweep.results.circuit import (
    FAITHFUL,
    ablation,
    check_circuit,
    circuit_lines,
    faithful_size,
    faithfulness,
    method,
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
    """Per store: its method, sizes (the empty circuit left out: 0 by definition, and not
    on a log axis) and faithfulness, for the figures."""
    out = []
    datasets = _open(sources)
    names = [method(ds) for ds in datasets]
    for k, ds in enumerate(datasets):
        f = faithfulness(ds, metric)
        name = names[k] if names.count(names[k]) == 1 else f"{names[k]} ({k + 1})"
        sizes = f["size"].values
        keep = sizes > 0
        out.append({
            "name": name, "sizes": sizes[keep].tolist(), "values": f.values[keep].tolist(),
            "n": int(ds.sizes["prompt"]), "metric": check_metric(ds, metric),
            "ablation": ablation(ds), "total": int(sizes[-1]),
        })  # fmt: skip
    return out


def title(lines: list[dict[str, Any]]) -> str:
    first = lines[0]
    n = sorted({c["n"] for c in lines})
    return (
        f"faithfulness on {first['metric']} of the top-K edge circuits: (circuit - empty) / "
        f"(full - empty), means over all {'/'.join(map(str, n))} prompts; edges outside "
        f"carry {first['ablation']}"
    )


def faithfulness_figure(sources: Source | Sequence[Source], metric: str | None = None) -> Any:
    """A plotly Figure: faithfulness against circuit size (log axis), one line per store."""
    import plotly.graph_objects as go

    lines = curves(sources, metric)
    fig = go.Figure()
    for k, c in enumerate(lines):
        fig.add_trace(go.Scatter(
            x=c["sizes"], y=[None if np.isnan(v) else round(v, 4) for v in c["values"]],
            mode="lines+markers", name=c["name"], line={"dash": DASHES[k % len(DASHES)]},
            hovertemplate=f"{c['name']}<br>%{{x}} edges<br>faithfulness %{{y:.3f}}<extra></extra>",
        ))  # fmt: skip
    fig.add_hline(y=FAITHFUL, line_dash="dot", line_color="#888")
    fig.update_layout(
        title={"text": title(lines), "font": {"size": 13}},
        xaxis={"title": {"text": "circuit size (edges kept, log scale)"}, "type": "log"},
        yaxis={"title": {"text": "faithfulness (0 = every edge ablated, 1 = full model)"}},
        template="plotly_white", legend={"title": {"text": "edges ranked by"}},
    )  # fmt: skip
    return fig


def faithfulness_png(
    sources: Source | Sequence[Source], path: Path, metric: str | None = None
) -> None:
    """The same curve with matplotlib, for a PNG."""
    import textwrap

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
    ax.set_xlabel("circuit size (edges kept, log scale)")
    ax.set_ylabel("faithfulness (0 = every edge ablated, 1 = full model)")
    ax.set_title("\n".join(textwrap.wrap(title(lines), 90)), fontsize=9)
    ax.legend(title="edges ranked by", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def drawn_size(ds: xr.Dataset, metric: str | None = None) -> tuple[int, str]:
    """The circuit to draw: the smallest stored size whose faithfulness reaches
    ``FAITHFUL`` (else the largest ranked size), at most ``MAX_DRAWN`` edges; and why."""
    f = faithfulness(ds, metric)
    size = faithful_size(ds, metric)
    if size is None:
        ranked = [int(s) for s in f["size"].values if 0 < s <= ds.sizes["rank"]]
        size = max(ranked) if ranked else 0
        why = f"no stored size reaches faithfulness {FAITHFUL}; the largest ranked circuit"
    else:
        why = f"the smallest stored circuit with faithfulness >= {FAITHFUL}"
    value = float(f.sel(size=size)) if size in f["size"].values else float("nan")
    drawn = min(size, MAX_DRAWN)
    top = f"; its top {drawn} edges drawn" if drawn < size else ""
    return drawn, (
        f"{size} edges by {method(ds)} scores, faithfulness {value:.2f} ({why}{top}); "
        "widths: |score|, blue positive, red negative"
    )


def render_circuits(stores: list[str], out_dir: Path, metric: str | None = None) -> Path:
    """``faithfulness.png``, the first store's circuit as ``circuit_graph.svg/png`` and
    ``index.html`` into ``out_dir``."""
    from plotly.offline import get_plotlyjs

    from sweep.results.edge_graph import circuit_graph, render_graph
    from sweep.results.plot import load

    loaded = [(s, load(s)) for s in stores]
    datasets = [ds for _, ds in loaded]
    faithfulness_png(datasets, out_dir / "faithfulness.png", metric)
    first = datasets[0]
    size, caption = drawn_size(first, metric)
    try:
        svg = render_graph(circuit_graph(first, size, caption), str(out_dir / "circuit_graph"))
        graph = f'<div id="circuit-graph">{svg}</div>'
    except SweepError as e:
        graph = f'<p class="missing">{html.escape(str(e))}</p>'
    curve = faithfulness_figure(datasets, metric).to_html(
        full_html=False, include_plotlyjs=False, div_id="faithfulness",
        config={"displaylogo": False, "responsive": True},
    )  # fmt: skip
    reports = "\n\n".join(f"{s}\n" + "\n".join(circuit_lines(ds)) for s, ds in loaded)
    (out_dir / "index.html").write_text(_PAGE.format(
        stores=html.escape(", ".join(stores)), plotly=get_plotlyjs(), curve=curve,
        caption=html.escape(caption), graph=graph, report=html.escape(reports),
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
