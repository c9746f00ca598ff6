"""Circuits as sets of edges: how they are written, ranked and sized.

A circuit is the top K edges of a ranking (best first): a scores store's edges by |mean
effect|, or the lines of a file. Its sizes always include 0 (the empty circuit: every
edge ablated) and the whole graph (nothing ablated), the two ends faithfulness is measured
between. Pure: names and numbers, no torch, no disk beyond reading the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.edges.graph import EMBED, LOGITS, RECEIVER_NAME, SENDER_NAME, GraphShape, edges
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
    """Each edge's score: a store's mean effect on the rank metric, in its units (NaN for
    a file's lines)."""
    method: str
    """What scored them, as a legend names it: ``exact``, ``EAP``, ``EAP-IG (5 steps)``,
    ``file``."""
    source: str
    """The scores store or the file."""
    metric: str = ""
    """The scores' metric that ranked them (a store's)."""
    scored: str = ""
    """What the scores patched (``sweep.results.analysis.ablation_of``): ``patch noise``,
    ``patch denoise``, ``zero``, ``mean``, ``resample``; '' for a file."""
    scaled: tuple[float, ...] = ()
    """Each edge's score on the scores store's own scale (the fraction of the clean
    behaviour it restores or destroys: positive carries the behaviour); empty for a file."""
    order: str = "abs"
    """``abs``: by |score| (the default); ``signed``: the edges that carry the behaviour
    most first (by the scaled score), as EAP-IG's ``absolute=False``."""

    def digest(self) -> str:
        """The order only: what changes a circuit's results."""
        text = "\n".join(edge_name(e) for e in self.edges)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def key(self) -> np.ndarray:
        """What thresholds compare, per edge: |score| (``abs``), or the score signed so
        that positive carries the behaviour (``signed``; in the metric's units)."""
        scores = np.asarray(self.scores, dtype=np.float64)
        if self.order == "abs" or not len(self.scaled):
            return np.abs(scores)
        scaled = np.asarray(self.scaled, dtype=np.float64)
        toward = np.sign(np.nansum(scaled * scores)) or 1.0
        return scores * toward


def ranked(
    edges: tuple[Edge, ...], scores: np.ndarray, scaled: np.ndarray, order: str
) -> np.ndarray:
    """The order of edges by ``order``: |score| descending, or the scaled score descending
    (``signed``); ties keep the given order, NaN last."""
    key = -np.abs(scores) if order == "abs" else -scaled
    return np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")


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


MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The fractions of the graph's edges MIB's circuit track measures its curves at."""


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


def as_count(value: float, total: int, key: str) -> int:
    """A size as edges: a count (1 or more, whole), or a fraction of the graph's ``total``
    edges (below 1: ``int(fraction * total)``, as MIB counts, at least 1)."""
    if not value > 0:
        raise ConfigError(
            f"{key}: {value:g} is not a size; give edge counts (10, 30) or fractions of the "
            "graph's edges (0.01, 0.1); the empty circuit is always stored"
        )
    if value < 1:
        return max(1, int(value * total))
    if value != int(value):
        raise ConfigError(
            f"{key}: {value:g} is neither a whole number of edges nor a fraction below 1"
        )
    return int(value)


def threshold_size(ranking: Ranking, threshold: float) -> int:
    """How many of the ranking's first edges have a key (``Ranking.key``) of at least
    ``threshold``: the circuit a threshold picks, as a top-K."""
    key = ranking.key()
    below = np.flatnonzero(~(key >= threshold))
    return int(below[0]) if len(below) else len(key)


def circuit_sizes(
    chosen: Sequence[float] | None,
    ranking: Ranking,
    total: int,
    key: str,
    thresholds: Sequence[float] = (),
) -> tuple[int, ...]:
    """The sizes a circuit sweep stores: 0, the chosen ones (default ``default_sizes``;
    fractions of the graph allowed), those the ``thresholds`` pick, a file's whole list,
    and the whole graph, ascending; a size beyond the ranked edges is refused."""
    n = len(ranking.edges)
    if chosen is None:
        sizes = list(default_sizes(n))
    else:
        sizes = [as_count(v, total, key) for v in chosen]
    big = [s for s in sizes if s > n and s != total]
    if big:
        what = "the graph has" if n == total else f"the ranking has (the graph has {total})"
        raise ConfigError(f"{key}: {big} larger than the {n} edges {what}; choose sizes up to {n}")
    sizes += [threshold_size(ranking, t) for t in thresholds]
    if n < total:
        sizes.append(n)  # a file's circuit: every edge it lists
    return tuple(sorted({0, *sizes, total}))


def receiver_nodes(receiver: str, shape: GraphShape) -> tuple[str, ...]:
    """The nodes a receiver feeds: a head's (``a5.h1.k`` -> ``a5.h1``), every head of a
    key/value group (``a5.g0.k``), an MLP, the logits."""
    parts = receiver.split(".")
    if len(parts) < 3:
        return (receiver,)
    layer, head = parts[0], parts[1]
    if head.startswith("h"):
        return (f"{layer}.{head}",)
    group = shape.n_heads // shape.kv_heads
    g = int(head[1:])
    return tuple(f"{layer}.h{h}" for h in range(g * group, (g + 1) * group))


def connected(circuit: Sequence[Edge], shape: GraphShape) -> np.ndarray:
    """[edge] whether each edge lies on a path from ``embed`` to ``logits`` through the
    circuit's edges. The rest dangle: a sender nothing of the circuit feeds reads only
    ablated inputs, a receiver whose node feeds nothing of the circuit changes nothing
    downstream, so neither moves the metric. As EAP-IG's pruning: drop edges whose sender
    has no edge in (but ``embed``) or whose receiver's node has no edge out (but the
    logits), until nothing changes (the graph is acyclic, so what is left is on a path)."""
    if not len(circuit):
        return np.zeros(0, dtype=bool)
    ids: dict[str, int] = {}
    sender = np.array([ids.setdefault(s, len(ids)) for s, _ in circuit], dtype=np.int64)
    feeds = [[ids.setdefault(n, len(ids)) for n in receiver_nodes(r, shape)] for _, r in circuit]
    width = max(len(f) for f in feeds)
    none = len(ids) + 2  # a padding node that nothing feeds and that feeds nothing
    into = np.array([f + [none] * (width - len(f)) for f in feeds], dtype=np.int64)
    embed, logits = ids.setdefault(EMBED, len(ids)), ids.setdefault(LOGITS, len(ids))
    keep = np.ones(len(circuit), dtype=bool)
    while True:
        fed, feeding = np.zeros(none + 1, dtype=bool), np.zeros(none + 1, dtype=bool)
        fed[embed], feeding[logits] = True, True
        fed[into[keep].ravel()] = True
        feeding[sender[keep]] = True
        fed[none], feeding[none] = False, False
        now = keep & fed[sender] & feeding[into].any(1)
        if (now == keep).all():
            return keep
        keep = now


def members(ranking: Ranking, size: int, shape: GraphShape, prune: bool) -> np.ndarray:
    """The positions in the ranking of the circuit of ``size``: its top ``size`` edges,
    without those that dangle (``connected``) when ``prune``."""
    top = np.arange(min(size, len(ranking.edges)))
    if not prune or not len(top):
        return top
    return top[connected(ranking.edges[: len(top)], shape)]
