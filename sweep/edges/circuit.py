"""Circuits as sets of edges: how they are written, ranked and sized.

A circuit is the top K edges of a ranking (best first): a scores store's edges by |mean
effect|, or the lines of a file. Its sizes always include 0 (the empty circuit: every
edge ablated) and the whole graph (nothing ablated), the two ends faithfulness is measured
between. Pure: names and numbers, no torch, no disk beyond reading the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sweep.edges.graph import RECEIVER_NAME, SENDER_NAME, GraphShape, edges
from sweep.errors import ConfigError

ARROW = "->"
Edge = tuple[str, str]
"""(sender, receiver) by name (``sweep.edges.graph``)."""


def edge_name(e: Edge) -> str:
    return f"{e[0]} {ARROW} {e[1]}"


@dataclass(frozen=True)
class Ranking:
    """Edges best first, and where the order came from."""

    edges: tuple[Edge, ...]
    scores: tuple[float, ...]
    """Each edge's score (a store's mean effect; NaN for a file's lines)."""
    method: str
    """What ranked them, as a legend names it: ``exact (patch noise)``, ``EAP``,
    ``EAP-IG (5 steps)``, ``file``."""
    source: str
    """The scores store or the file."""
    metric: str = ""
    """The scores' metric that ranked them (a store's)."""

    def digest(self) -> str:
        """The order only: what changes a circuit's results."""
        text = "\n".join(edge_name(e) for e in self.edges)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_edge(text: str) -> Edge | None:
    """``a0.h1 -> a1.h0.k`` as (sender, receiver); None if it is not written so."""
    sender, arrow, receiver = text.partition(ARROW)
    sender, receiver = sender.strip(), receiver.strip()
    if not arrow or not SENDER_NAME.fullmatch(sender) or not RECEIVER_NAME.fullmatch(receiver):
        return None
    return sender, receiver


def read_edges(key: str, path: str) -> tuple[Edge, ...]:
    """A file's edges, one per line, best first (``#`` starts a comment; blank lines are
    skipped); a line that is not an edge, or one repeated, is refused with its number."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{key}: cannot read {path}: {why}") from None
    out: list[Edge] = []
    seen: dict[Edge, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        edge = parse_edge(line)
        if edge is None:
            raise ConfigError(
                f"{key}: {path} line {number}: {line!r} is not an edge; write one edge per "
                f"line as sender {ARROW} receiver, like a0.h1 {ARROW} a1.h0.k or m0 {ARROW} logits"
            )
        if edge in seen:
            raise ConfigError(
                f"{key}: {path} line {number}: {edge_name(edge)} repeats line {seen[edge]}"
            )
        seen[edge] = number
        out.append(edge)
    if not out:
        raise ConfigError(f"{key}: {path} lists no edge; write one per line, best first")
    return tuple(out)


def edge_indices(ranking: Ranking, shape: GraphShape, key: str) -> tuple[int, ...]:
    """Each ranked edge's index in the model's graph (``graph.edges``); an edge the graph
    does not have is refused, naming it."""
    index = {(s.name, r.name): i for i, (s, r) in enumerate(edges(shape))}
    missing = [e for e in ranking.edges if e not in index]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        mlp = "no MLPs" if not shape.mlp else "MLPs reading their own layer's heads"
        if shape.mlp and shape.parallel:
            mlp = "MLPs in parallel with attention"
        raise ConfigError(
            f"{key}: {edge_name(missing[0])}{more} is not an edge of this model's graph "
            f"({shape.n_layers} layers, {shape.n_heads} heads, {mlp}; a receiver reads the "
            "senders written before it only)"
        )
    return tuple(index[e] for e in ranking.edges)


def default_sizes(ranked: int) -> tuple[int, ...]:
    """1, 3, 10, 30, 100... below the number of ranked edges."""
    out: list[int] = []
    k = 0
    while True:
        size = (1, 3)[k % 2] * 10 ** (k // 2)
        if size >= ranked:
            return tuple(out)
        out.append(size)
        k += 1


def circuit_sizes(
    chosen: tuple[int, ...] | None, ranked: int, total: int, key: str
) -> tuple[int, ...]:
    """The sizes a circuit sweep stores: 0, the chosen ones (default ``default_sizes``),
    and the whole graph, ascending; a size beyond the ranked edges is refused."""
    sizes = default_sizes(ranked) if chosen is None else chosen
    big = [s for s in sizes if s > ranked and s != total]
    if big:
        what = "the graph has" if ranked == total else f"the ranking has (the graph has {total})"
        raise ConfigError(
            f"{key}: {big} larger than the {ranked} edges {what}; choose sizes up to {ranked}"
        )
    return tuple(sorted({0, *sizes, total}))
