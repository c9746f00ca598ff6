"""A circuit's forward: the model with every edge outside the circuit ablated, all at once.

A circuit is a set of edges (``sweep.edges.graph``). Each receiver reads its own copy of
the residual stream: the one this forward computes, plus, for each sender whose edge into
it is *not* in the circuit, that sender's ablated output minus its output in this forward.
So a receiver sees its circuit senders as they are now (downstream of every other
ablation) and the rest as ablated; the full circuit is the base run, the empty circuit is
every sender ablated (the corrupted run when the ablation is the corrupted run's outputs),
and a circuit missing one edge is that edge patched alone. One forward per circuit, on the
family's suffix forward, every position recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sweep.edges.graph import Node
from sweep.engine.eap import per_copy_qkv
from sweep.engine.forward.suffix import Rows, SuffixForward


@dataclass(frozen=True)
class CircuitGraph:
    """Where each edge sits in its receiver layer's cut mask, worked out once per model:
    a circuit's masks are then one scatter of its ablated edges."""

    edges: tuple[tuple[Node, Node], ...]
    senders: tuple[str, ...]
    """The masks' columns: every sender, in block order."""
    counts: tuple[int, ...]
    """q, k and v copies per layer (heads; key/value heads for k and v)."""
    layer: np.ndarray
    """[edge] the receiver's layer (``n_layers``: the logits)."""
    slot: np.ndarray
    """[edge] the receiver's row: its copy for q, k and v, ``sum(counts)`` for the MLP."""
    column: np.ndarray
    """[edge] the sender's column."""

    @classmethod
    def of(cls, fw: SuffixForward, edges: Sequence[tuple[Node, Node]]) -> CircuitGraph:
        cfg = fw.model.cfg
        kv = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        counts = (int(cfg.n_heads), kv, kv)
        copies = _copy_names(counts)
        senders = tuple(s.name for s in dict.fromkeys(s for s, _ in edges))
        row = {c.format(i): (i, j) for i in range(fw.n_layers) for j, c in enumerate(copies)}
        row |= {f"m{i}": (i, len(copies)) for i in range(fw.n_layers)}
        row["logits"] = (fw.n_layers, 0)
        col = {name: k for k, name in enumerate(senders)}
        at = np.array([(*row[r.name], col[s.name]) for s, r in edges], dtype=np.int64)
        return cls(tuple(edges), senders, counts, at[:, 0], at[:, 1], at[:, 2])

    def masks(self, keep: Sequence[bool] | np.ndarray, n_layers: int) -> np.ndarray:
        """[layer + 1, copies + 1, sender] 1 where the sender's edge into the receiver is
        ablated (``keep`` false); the last layer's first row is the logits'."""
        out = np.zeros((n_layers + 1, sum(self.counts) + 1, len(self.senders)), np.float32)
        cut = ~np.asarray(keep, dtype=bool)
        out[self.layer[cut], self.slot[cut], self.column[cut]] = 1.0
        return out


def circuit_logits(
    fw: SuffixForward,
    embed: torch.Tensor,
    last: torch.Tensor,
    edges: Sequence[tuple[Node, Node]] | CircuitGraph,
    keep: Sequence[bool] | np.ndarray,
    ablated: dict[str, torch.Tensor],
    reads: int = 1,
) -> torch.Tensor:
    """Last-position logits [prompt, vocab] ([prompt, reads, vocab]) of the base run
    started at ``embed`` [prompt, pos, d_model] with the edges whose ``keep`` is false
    ablated: their receiver reads ``ablated[sender]`` [prompt, pos, d_model] instead of
    the sender's output.

    A receiver's replacement is one product of its row of the cut mask (1: the edge into
    it is ablated) with the senders' changes, summed in float32; receivers of a layer whose
    rows are equal read the same copy of the residual, so q, k and v are computed once per
    distinct copy (a small circuit leaves most receivers with every sender cut: a handful
    of copies)."""
    g = edges if isinstance(edges, CircuitGraph) else CircuitGraph.of(fw, edges)
    n, seq, d = embed.shape
    rows = Rows.make(torch.arange(n, device=last.device), torch.zeros_like(last), last, reads)
    d_head = int(fw.model.cfg.d_head)
    masks = g.masks(keep, fw.n_layers)
    copies = sum(g.counts)
    x = embed[rows.tok_prompt, rows.tok_pos]
    column = {name: k for k, name in enumerate(g.senders)}
    # Each sender's change, its ablated output minus its output in this forward (zero
    # until the forward writes it: a receiver reads only senders written before it).
    change = torch.zeros(len(g.senders), *x.shape, device=x.device, dtype=torch.float32)

    def write(name: str, out: torch.Tensor) -> None:
        change[column[name]] = (ablated[name][rows.tok_prompt, rows.tok_pos] - out).float()

    def replacement(mask: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """[rows of mask, T, d] each row's sum of its cut senders' changes."""
        used = np.flatnonzero(mask.any(0))
        if not len(used):
            return torch.zeros(len(mask), *x.shape, device=x.device, dtype=like.dtype)
        m = torch.from_numpy(mask[:, used]).to(x.device)
        index = torch.from_numpy(used).to(x.device)
        return torch.einsum("rs,std->rtd", m, change.index_select(0, index)).to(like.dtype)

    write("embed", x)
    mlp_reads = "resid_pre" if fw.PARALLEL else "resid_mid"  # what an MLP reads
    for i in range(fw.n_layers):
        seen: dict[str, torch.Tensor] = {}
        distinct, which = np.unique(masks[i, :copies], axis=0, return_inverse=True)
        which_t = torch.from_numpy(which.reshape(-1)).to(x.device)

        def stage(
            name: str, act: torch.Tensor, i: int = i, seen: dict = seen,
            distinct: np.ndarray = distinct, which: torch.Tensor = which_t,
        ) -> torch.Tensor:  # fmt: skip
            if name in ("resid_pre", "resid_mid"):
                seen[name] = act
            elif name == "q":
                residual = seen["resid_pre"]
                copies_in = residual[None] + replacement(distinct, residual)
                seen.update(zip("qkv", per_copy_qkv(fw, i, copies_in, g.counts, which),
                                strict=True))  # fmt: skip
                return seen["q"].to(act.dtype)
            elif name in ("k", "v"):
                return seen[name].to(act.dtype)
            elif name == "z":
                for h in range(act.shape[1]):
                    write(f"a{i}.h{h}", fw.head_write(i, h, act[:, h]))
            elif name == "mlp_out":
                inputs = seen[mlp_reads] + replacement(masks[i, copies:], seen[mlp_reads])[0]
                act = fw.mlp(i, inputs).to(act.dtype)
                write(f"m{i}", act)
            return act

        k, v = (
            torch.zeros(n, seq, c, d_head, device=x.device, dtype=x.dtype) for c in g.counts[1:]
        )
        x = fw.block(i, x, rows, k, v, stage, False)
    final = x + replacement(masks[fw.n_layers, :1], x)[0]
    return fw.final_logits(final[rows.final])


def _copy_names(counts: Sequence[int]) -> list[str]:
    """The receiver of each residual copy of a layer (``{}`` for the layer), in the order
    ``per_copy_qkv`` takes them: q per head, then k and v per key/value head."""
    grouped = counts[1] != counts[0]
    out = [f"a{{}}.h{h}.q" for h in range(counts[0])]
    for kind, count in zip("kv", counts[1:], strict=True):
        out += [f"a{{}}.{'g' if grouped else 'h'}{h}.{kind}" for h in range(count)]
    return out
