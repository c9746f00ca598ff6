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
    ``ablated[sender]`` [prompt, pos, d_model] instead of the sender's output."""
    n, seq, d = embed.shape
    rows = Rows.make(torch.arange(n, device=last.device), torch.zeros_like(last), last)
    at_tok = {s: a[rows.tok_prompt, rows.tok_pos] for s, a in ablated.items()}
    cut: dict[str, list[str]] = {}  # receiver -> senders whose edge into it is ablated
    for (s, r), kept in zip(edges, keep, strict=True):
        if not kept:
            cut.setdefault(r.name, []).append(s.name)
    x = embed[rows.tok_prompt, rows.tok_pos]
    now = {"embed": x}  # each sender's output in this forward

    def change(receiver: str, tokens: torch.Tensor | None = None) -> torch.Tensor | float:
        """What ``receiver`` reads beyond the residual: its ablated senders' replacement."""
        senders = cut.get(receiver, [])
        if not senders:
            return 0.0
        total = sum(at_tok[s] - now[s] for s in senders)
        return total if tokens is None else total[tokens]  # type: ignore[index]

    d_head = int(fw.model.cfg.d_head)
    counts = [int(t.shape[1]) for t in fw.qkv(0, embed.new_zeros(1, d))]
    names = _copy_names(fw, counts)
    reads = "resid_pre" if fw.PARALLEL else "resid_mid"  # what an MLP reads
    for i in range(fw.n_layers):
        seen: dict[str, torch.Tensor] = {}

        def at(name: str, act: torch.Tensor, i: int = i, seen: dict = seen) -> torch.Tensor:
            if name in ("resid_pre", "resid_mid"):
                seen[name] = act
            elif name == "q":
                extra = torch.stack([torch.as_tensor(change(c.format(i)), dtype=act.dtype,
                                                     device=act.device).expand_as(seen["resid_pre"])
                                     for c in names])  # fmt: skip
                copies = seen["resid_pre"][None] + extra
                seen.update(zip("qkv", per_copy_qkv(fw, i, copies, counts), strict=True))
                return seen["q"].to(act.dtype)
            elif name in ("k", "v"):
                return seen[name].to(act.dtype)
            elif name == "z":
                for h in range(act.shape[1]):
                    now[f"a{i}.h{h}"] = fw.head_write(i, h, act[:, h])
            elif name == "mlp_out":
                act = fw.mlp(i, seen[reads] + change(f"m{i}")).to(act.dtype)
                now[f"m{i}"] = act
            return act

        k, v = (torch.zeros(n, seq, c, d_head, device=x.device, dtype=x.dtype) for c in counts[1:])
        x = fw.block(i, x, rows, k, v, at, False)
    return fw.final_logits(x[rows.final] + change("logits", rows.final))


def _copy_names(fw: SuffixForward, counts: list[int]) -> list[str]:
    """The receiver of each residual copy of a layer (``{}`` for the layer), in the order
    ``per_copy_qkv`` takes them: q per head, then k and v per key/value head."""
    grouped = counts[1] != counts[0]
    out = [f"a{{}}.h{h}.q" for h in range(counts[0])]
    for kind, count in zip("kv", counts[1:], strict=True):
        out += [f"a{{}}.{'g' if grouped else 'h'}{h}.{kind}" for h in range(count)]
    return out
