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

import torch

from sweep.edges.graph import Node
from sweep.engine.eap import per_copy_qkv
from sweep.engine.forward.suffix import Rows, SuffixForward


def circuit_logits(
    fw: SuffixForward,
    embed: torch.Tensor,
    last: torch.Tensor,
    edges: Sequence[tuple[Node, Node]],
    keep: Sequence[bool],
    ablated: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Last-position logits [prompt, vocab] of the base run started at ``embed`` [prompt,
    pos, d_model] with the edges whose ``keep`` is false ablated: their receiver reads
    ``ablated[sender]`` [prompt, pos, d_model] instead of the sender's output.

    A receiver's replacement is one product of its row of the cut mask (1: the edge into
    it is ablated) with the senders' changes; receivers of a layer whose rows are equal
    read the same copy of the residual, so q, k and v are computed once per distinct copy
    (a small circuit leaves most receivers with every sender cut: a handful of copies)."""
    n, seq, d = embed.shape
    rows = Rows.make(torch.arange(n, device=last.device), torch.zeros_like(last), last)
    order = [s.name for s in dict.fromkeys(s for s, _ in edges)]  # the mask's columns
    d_head = int(fw.model.cfg.d_head)
    counts = [int(t.shape[1]) for t in fw.qkv(0, embed.new_zeros(1, d))]
    names = _copy_names(fw, counts)
    cut = _cut_masks(edges, keep, order, names, fw.n_layers, embed)
    x = embed[rows.tok_prompt, rows.tok_pos]
    # Each sender's change, its ablated output minus its output in this forward.
    change = {"embed": ablated["embed"][rows.tok_prompt, rows.tok_pos] - x}

    def replacement(mask: torch.Tensor) -> torch.Tensor:
        """[rows of mask, T, d] each row's sum of its cut senders' changes (a receiver
        reads only senders already written)."""
        written = [k for k, name in enumerate(order) if name in change]
        done = torch.stack([change[order[k]] for k in written])
        return torch.einsum("rs,std->rtd", mask[:, written], done)

    reads = "resid_pre" if fw.PARALLEL else "resid_mid"  # what an MLP reads
    for i in range(fw.n_layers):
        seen: dict[str, torch.Tensor] = {}

        def stage(name: str, act: torch.Tensor, i: int = i, seen: dict = seen) -> torch.Tensor:
            if name in ("resid_pre", "resid_mid"):
                seen[name] = act
            elif name == "q":
                distinct, which = torch.unique(cut[i]["qkv"], dim=0, return_inverse=True)
                copies = seen["resid_pre"][None] + replacement(distinct).to(act.dtype)
                seen.update(zip("qkv", per_copy_qkv(fw, i, copies, counts, which), strict=True))
                return seen["q"].to(act.dtype)
            elif name in ("k", "v"):
                return seen[name].to(act.dtype)
            elif name == "z":
                for h in range(act.shape[1]):
                    out = fw.head_write(i, h, act[:, h])
                    change[f"a{i}.h{h}"] = (
                        ablated[f"a{i}.h{h}"][rows.tok_prompt, rows.tok_pos] - out
                    )
            elif name == "mlp_out":
                act = fw.mlp(i, seen[reads] + replacement(cut[i]["mlp"])[0]).to(act.dtype)
                change[f"m{i}"] = ablated[f"m{i}"][rows.tok_prompt, rows.tok_pos] - act
            return act

        k, v = (torch.zeros(n, seq, c, d_head, device=x.device, dtype=x.dtype) for c in counts[1:])
        x = fw.block(i, x, rows, k, v, stage, False)
    final = x + replacement(cut[fw.n_layers]["logits"])[0].to(x.dtype)
    return fw.final_logits(final[rows.final])


def _cut_masks(
    edges: Sequence[tuple[Node, Node]],
    keep: Sequence[bool],
    order: list[str],
    copies: list[str],
    n_layers: int,
    like: torch.Tensor,
) -> list[dict[str, torch.Tensor]]:
    """Per layer: ``qkv`` [copy, sender] (``copies``' order) and ``mlp`` [1, sender], and
    at ``n_layers`` the ``logits`` [1, sender]: 1 where the sender's edge into the
    receiver is ablated."""
    row = {c.format(i): (i, "qkv", j) for i in range(n_layers) for j, c in enumerate(copies)}
    row |= {f"m{i}": (i, "mlp", 0) for i in range(n_layers)} | {"logits": (n_layers, "logits", 0)}
    out = [
        {"qkv": torch.zeros(len(copies), len(order)), "mlp": torch.zeros(1, len(order))}
        for _ in range(n_layers)
    ] + [{"logits": torch.zeros(1, len(order))}]
    at = {name: k for k, name in enumerate(order)}
    for (s, r), kept in zip(edges, keep, strict=True):
        if not kept:
            layer, kind, j = row[r.name]
            out[layer][kind][j, at[s.name]] = 1.0
    return [{k: v.to(like.device, like.dtype) for k, v in m.items()} for m in out]


def _copy_names(fw: SuffixForward, counts: list[int]) -> list[str]:
    """The receiver of each residual copy of a layer (``{}`` for the layer), in the order
    ``per_copy_qkv`` takes them: q per head, then k and v per key/value head."""
    grouped = counts[1] != counts[0]
    out = [f"a{{}}.h{h}.q" for h in range(counts[0])]
    for kind, count in zip("kv", counts[1:], strict=True):
        out += [f"a{{}}.{'g' if grouped else 'h'}{h}.{kind}" for h in range(count)]
    return out
