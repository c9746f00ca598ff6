"""The top edges of an edge store drawn as a circuit, laid out by Graphviz's ``dot``.

Nodes are the model's parts as circuit diagrams show them: ``embed``, each head (``a3.h7``;
a grouped-query model's key/value heads ``a5.g0``), each MLP (``m2``) and ``logits``,
ranked bottom to top by block order (a layer's heads, then its MLP). An edge into a head's
query, key or value input is labelled ``q``, ``k`` or ``v``; its colour is the sign of its
effect on the intervention's own scale (blue: towards the clean behaviour), its width the
size, and its label the scaled value. Torch-free; needs the ``graphviz`` package and
Graphviz's ``dot`` program (``make graphviz``, or the system's package).
"""

from __future__ import annotations

import xarray as xr

from sweep.errors import SweepError
from sweep.results.analysis import check_metric, scale, top_edges

TOP = 20
"""Edges drawn by default."""


def split(name: str) -> tuple[str, str]:
    """A graph name as a drawn node and the input it reads: ``a5.h1.k`` -> (``a5.h1``,
    ``k``); senders, MLPs and the logits are nodes as they are."""
    parts = name.split(".")
    return (".".join(parts[:2]), parts[2]) if len(parts) == 3 else (name, "")


def _rank(node: str, n_layers: int) -> int:
    """Bottom-to-top order: the embedding, then each layer's heads and its MLP, the logits."""
    if node == "embed":
        return 0
    if node == "logits":
        return 2 * n_layers + 1
    if node.startswith("m"):
        return 2 * int(node[1:]) + 2
    return 2 * int(node[1:].split(".")[0]) + 1


def edge_graph(
    ds: xr.Dataset, k: int = TOP, metric: str | None = None, min_prompts: int | None = None
):  # -> graphviz.Digraph (imported here: only pictures need it)
    """The ``k`` edges with the largest |mean effect| (``top_edges``) as a Graphviz graph."""
    import graphviz

    metric = check_metric(ds, metric)
    top = top_edges(ds, k, metric, min_prompts=min_prompts)
    sc = scale(ds)
    n_layers = int(ds.attrs["graph"]["n_layers"])
    g = graphviz.Digraph("edges", graph_attr={
        "rankdir": "BT", "label": f"top {len(top)} edges by |effect| on {metric} "
        f"({sc.intervention}); labels: {sc.short}", "labelloc": "t", "fontsize": "12",
    }, node_attr={"shape": "box", "style": "rounded", "fontsize": "11"})  # fmt: skip
    largest = max(float(top["scaled"].abs().max()) if len(top) else 0.0, 1e-9)
    nodes: dict[str, int] = {}
    for _, r in top.iterrows():
        sender, _ = split(str(r["sender"]))
        receiver, kind = split(str(r["receiver"]))
        for node in (sender, receiver):
            nodes[node] = _rank(node, n_layers)
        value = float(r["scaled"])
        at = f" @{r['pos']}" if "pos" in r else ""  # edges one position at a time
        g.edge(sender, receiver, label=f"{kind}{at} {value:+.2f}".strip(),
               color="#2166ac" if value >= 0 else "#b2182b",
               penwidth=f"{1 + 5 * abs(value) / largest:.2f}", fontsize="10")  # fmt: skip
    for rank in sorted(set(nodes.values())):
        with g.subgraph() as same:
            same.attr(rank="same")
            for node in sorted(n for n, v in nodes.items() if v == rank):
                same.node(node)
    return g


def render_graph(g, out_stem: str) -> str:
    """Write ``out_stem.svg`` and ``out_stem.png``; return the SVG (for the page)."""
    import graphviz

    try:
        svg = g.pipe(format="svg").decode()
        png = g.pipe(format="png")
    except graphviz.ExecutableNotFound:
        raise SweepError(
            "Graphviz's dot program is not installed, so the top edges cannot be drawn: "
            "install it (make graphviz, or apt install graphviz) and run python -m sweep.plot"
        ) from None
    with open(f"{out_stem}.svg", "w", encoding="utf-8") as f:
        f.write(svg)
    with open(f"{out_stem}.png", "wb") as f:
        f.write(png)
    return svg[svg.index("<svg") :]
