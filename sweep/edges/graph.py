"""The computational graph of a transformer, as circuit discovery writes it.

Senders write into the residual stream: the embedding (``embed``), each attention head's
output (``a3.h7``) and each MLP's output (``m2``). Receivers read from it: each head's query,
key and value input (``a5.h1.q``; a grouped-query model's keys and values are per key/value
head, ``a5.g0.k``), each MLP's input (``m4``) and the logits (``logits``). An edge joins a
sender to every receiver that reads the residual stream after the sender wrote it: a later
layer, or its own layer's MLP for a head (not in parallel-block models such as Pythia and
GPT-J, whose MLP reads the same residual as the attention).

Pure: names and layers from the model's shape, no torch.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass

EMBED = "embed"
LOGITS = "logits"


@dataclass(frozen=True, slots=True)
class Node:
    """A sender or a receiver: where it sits and what it is."""

    name: str
    layer: int
    """Its block (-1: the embedding, ``n_layers``: the logits)."""
    kind: str
    """Senders: ``embed``, ``head``, ``mlp``; receivers: ``q``, ``k``, ``v``, ``mlp``,
    ``logits``."""
    head: int = -1
    """The head (a key/value head for a grouped-query model's k and v), else -1."""


@dataclass(frozen=True, slots=True)
class GraphShape:
    n_layers: int
    n_heads: int
    n_kv_heads: int = 0
    """Key/value heads (0: as many as query heads)."""
    mlp: bool = True
    """Whether blocks have an MLP (attention-only models do not)."""
    parallel: bool = False
    """Attention and MLP read the same residual (Pythia, GPT-J)."""

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


def senders(shape: GraphShape) -> list[Node]:
    """In block order: the embedding, then each layer's heads, then its MLP."""
    return list(_senders(shape))


def receivers(shape: GraphShape) -> list[Node]:
    """In block order: each layer's q, k and v inputs per head, then its MLP; the logits."""
    return list(_receivers(shape))


@functools.cache
def _senders(shape: GraphShape) -> tuple[Node, ...]:
    out = [Node(EMBED, -1, "embed")]
    for layer in range(shape.n_layers):
        out += [Node(f"a{layer}.h{h}", layer, "head", h) for h in range(shape.n_heads)]
        if shape.mlp:
            out.append(Node(f"m{layer}", layer, "mlp"))
    return tuple(out)


@functools.cache
def _receivers(shape: GraphShape) -> tuple[Node, ...]:
    grouped = shape.kv_heads != shape.n_heads
    out = []
    for layer in range(shape.n_layers):
        for h in range(shape.n_heads):
            out.append(Node(f"a{layer}.h{h}.q", layer, "q", h))
        for kind in "kv":
            for h in range(shape.kv_heads):
                name = f"a{layer}.g{h}.{kind}" if grouped else f"a{layer}.h{h}.{kind}"
                out.append(Node(name, layer, kind, h))
        if shape.mlp:
            out.append(Node(f"m{layer}", layer, "mlp"))
    return (*out, Node(LOGITS, shape.n_layers, "logits"))


def connects(sender: Node, receiver: Node, shape: GraphShape) -> bool:
    """Whether the receiver reads what the sender wrote."""
    if receiver.layer > sender.layer:
        return True
    same = receiver.layer == sender.layer
    return same and sender.kind == "head" and receiver.kind == "mlp" and not shape.parallel


def edges(shape: GraphShape) -> list[tuple[Node, Node]]:
    """Every (sender, receiver) pair that ``connects``, receiver-major in block order."""
    return list(_edges(shape))


@functools.cache
def _edges(shape: GraphShape) -> tuple[tuple[Node, Node], ...]:
    out = _senders(shape)
    return tuple((s, r) for r in _receivers(shape) for s in out if connects(s, r, shape))


SENDER_NAME = re.compile(r"embed|a\d+\.h\d+|m\d+")
RECEIVER_NAME = re.compile(r"a\d+\.[hg]\d+\.[qkv]|m\d+|logits")
WILDCARDS = "*?["


def well_formed(pattern: str, role: str) -> bool:
    """Whether a ``grid.senders`` / ``grid.receivers`` entry can name a node: a glob
    (``a3.*``, ``*.k``), or a name of the role's grammar (``a3.h7`` for a sender,
    ``a5.h1.q`` for a receiver). Checked before any model loads."""
    if any(c in pattern for c in WILDCARDS):
        return True
    return (SENDER_NAME if role == "sender" else RECEIVER_NAME).fullmatch(pattern) is not None


def select(nodes: list[Node], patterns: tuple[str, ...] | None) -> tuple[list[int], list[str]]:
    """Indices of the nodes any pattern matches (all: None), in block order, and the
    patterns that match none."""
    if patterns is None:
        return list(range(len(nodes))), []
    hits = [i for i, n in enumerate(nodes) if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n.name, p) for n in nodes)]
    return hits, unmatched
