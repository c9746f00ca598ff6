"""The top edges of an edge store drawn as a circuit, laid out by Graphviz's ``dot``.

Nodes are the model's parts as circuit diagrams show them: ``embed``, each head (``a3.h7``;
a grouped-query model's key/value heads ``a5.g0``), each MLP (``m2``) and ``logits``,
ranked bottom to top by block order (a layer's heads, then its MLP). An edge into a head's
query, key or value input is labelled ``q``, ``k`` or ``v``; its colour is the sign of its
effect on the intervention's own scale (blue: positive), its width the size, and its label
the scaled value. A circuit store's circuit is drawn alike, by its ranking's scaled scores
(one scale and one colour rule for both pictures).
Torch-free; needs the ``graphviz`` package and Graphviz's ``dot`` program (``make
graphviz``, or the system's package).
"""

from __future__ import annotations

import textwrap

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
    metric = check_metric(ds, metric)
    top = top_edges(ds, k, metric, min_prompts=min_prompts)
    sc = scale(ds)
    rows = [
        (str(r["sender"]), str(r["receiver"]), float(r["scaled"]),
         f" @{r['pos']}" if "pos" in r else "")  # edges one position at a time
        for _, r in top.iterrows()
    ]  # fmt: skip
    title = f"top {len(top)} edges by |effect| on {metric} ({sc.intervention}); labels: {sc.short}"
    return draw(rows, int(ds.attrs["graph"]["n_layers"]), title)


def draw(rows: list[tuple[str, str, float, str]], n_layers: int, title: str):  # -> Digraph
    """Edges (sender, receiver, value, label suffix) as a graph: colour the value's sign
    (blue: positive, red: negative), width its size, label the input and value."""
    import graphviz

    g = graphviz.Digraph("edges", graph_attr={
        "rankdir": "BT", "label": "\n".join(textwrap.wrap(title, 110)), "labelloc": "t",
        "fontsize": "12",
    }, node_attr={"shape": "box", "style": "rounded", "fontsize": "11"})  # fmt: skip
    largest = max([abs(v) for _, _, v, _ in rows if v == v] + [1e-9])
    nodes: dict[str, int] = {}
    for sender_name, receiver_name, value, at in rows:
        sender, _ = split(sender_name)
        receiver, kind = split(receiver_name)
        for node in (sender, receiver):
            nodes[node] = _rank(node, n_layers)
        known = value == value  # a file's edges carry no score
        g.edge(sender, receiver, label=f"{kind}{at} {value:+.2f}".strip() if known else kind,
               color="#2166ac" if not known or value >= 0 else "#b2182b",
               penwidth=f"{1 + 5 * abs(value) / largest:.2f}" if known else "2",
               fontsize="10")  # fmt: skip
    for rank in sorted(set(nodes.values())):
        with g.subgraph() as same:
            same.attr(rank="same")
            for node in sorted(n for n, v in nodes.items() if v == rank):
                same.node(node)
    return g


def circuit_graph(ds: xr.Dataset, size: int, title: str, most: int = 100):  # -> Digraph
    """The circuit of ``size`` of a circuit store (its best ``most`` edges at most), drawn as
    the edge store's graph is: labels, widths and colours by the score on the scores
    store's own scale (a file's edges carry none)."""
    from sweep.results.faithfulness import circuit_edges

    table = circuit_edges(ds, size).head(most)
    rows = [(r.sender, r.receiver, float(r.scaled), "") for r in table.itertuples()]
    return draw(rows, int(ds.attrs["graph"]["n_layers"]), title)


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
