"""Exact edge patching on the suffix forward of any family whose heads write their own
share of the residual stream (GPT-2, the Llama family, GPT-NeoX, GPT-J).

An edge (sender -> receiver) is patched by giving the receiver, and only it, the residual
stream it reads plus the sender's change: ``source output - base output`` of the sender,
at every position. Nothing before the receiver's layer changes, and under causal attention
nothing before the first position where that change is non-zero, so each row's forward
starts at the receiver's layer and that position, from the cached base run; many edges of
one receiver layer share a batched forward. Everything after the receiver recomputes.

The receiver is recomputed by the family's own code (``SuffixForward.qkv`` and ``mlp``): a
head's q, k or v of the residual plus the change (a grouped-query model's k and v per
key/value head), an MLP's output of the residual it reads plus the change (in a
parallel-block model, the block's input).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sweep.edges.graph import Node
from sweep.engine.cells import at_reads
from sweep.engine.forward.suffix import Rows, SuffixForward, Trace

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

KINDS = ("q", "k", "v")


def edge_hooks(n_layers: int, mlp: bool) -> set[str]:
    """The hooks whose values make senders' outputs (both runs), and the final residual
    the logits receiver reads (base run)."""
    names = {"blocks.0.hook_resid_pre", f"blocks.{n_layers - 1}.hook_resid_post"}
    names |= {f"blocks.{i}.attn.hook_z" for i in range(n_layers)}
    if mlp:
        names |= {f"blocks.{i}.hook_mlp_out" for i in range(n_layers)}
    return names


def sender_outputs(forward: SuffixForward, cache: dict[str, torch.Tensor], n: Node) -> torch.Tensor:
    """What a sender wrote into the residual stream, [prompt, pos, d_model] (a head's
    output without the attention bias, which every head shares and no patch changes)."""
    if n.kind == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if n.kind == "mlp":
        return cache[f"blocks.{n.layer}.hook_mlp_out"]
    return forward.head_write(n.layer, n.head, cache[f"blocks.{n.layer}.attn.hook_z"][:, :, n.head])


class Deltas(dict[str, torch.Tensor]):
    """Each sender's change by name, [prompt, pos, d_model]: views of one tensor
    ``stacked`` [prompt, pos, sender, d_model] (``column``: each sender's place in it), so
    that EAP scores every sender against a receiver's gradient in one product."""

    stacked: torch.Tensor
    column: dict[str, int]


def deltas(
    forward: SuffixForward,
    block: BlockRuns,
    senders: Sequence[Node],
    source: dict[str, torch.Tensor] | None = None,
) -> Deltas:
    """Each sender's change, source minus base, [prompt, pos, d_model]; zero past each
    prompt's end (padding is never read). ``source``: the activations the sources are made
    of (default: the other run's, ``block.source``)."""
    seq = block.clean_tokens.shape[1]
    inside = torch.arange(seq, device=block.last.device)[None, :] <= block.last[:, None]
    source = block.source if source is None else source
    out = Deltas()
    first = sender_outputs(forward, block.base, senders[0])
    stacked = first.new_zeros(first.shape[0], first.shape[1], len(senders), first.shape[2])
    for k, s in enumerate(senders):
        d = sender_outputs(forward, source, s) - sender_outputs(forward, block.base, s)
        stacked[:, :, k] = d * inside[..., None].to(d.dtype)
        out[s.name] = stacked[:, :, k]
    out.stacked, out.column = stacked, {s.name: k for k, s in enumerate(senders)}
    return out


@dataclass(frozen=True)
class EdgeRows:
    """One batched forward: ``len(edges)`` copies of the block's prompts, edge-major."""

    rows: Rows
    delta: torch.Tensor
    """[T, d_model] each packed token's sender change."""
    receivers: tuple[Node, ...]
    n: int


def edge_rows(
    edges: Sequence[tuple[Node, Node]], delta: dict[str, torch.Tensor], block: BlockRuns
) -> EdgeRows:
    n = block.n
    prompt = torch.arange(n, device=block.last.device).repeat(len(edges))
    stacked = torch.stack([delta[s.name] for s, _ in edges])  # [E, prompt, pos, d]
    nonzero = stacked.abs().amax(-1) > 0  # [E, prompt, pos]
    seq = nonzero.shape[-1]
    first = torch.where(nonzero, torch.arange(seq, device=nonzero.device), seq).amin(-1)
    last = block.last[prompt]
    start = torch.minimum(first.flatten(), last)  # a sender that changes nothing: reads only
    rows = Rows.make(prompt, start, last, block.reads)
    edge = rows.tok_row // n
    return EdgeRows(rows, stacked[edge, rows.tok_prompt, rows.tok_pos],
                    tuple(r for _, r in edges), n)  # fmt: skip


class EdgeForward:
    """Edges into one receiver layer per call, on a family's suffix forward."""

    def __init__(self, forward: SuffixForward) -> None:
        self.fw = forward

    def logits(self, layer: int, e: EdgeRows, block: BlockRuns) -> torch.Tensor:
        """[rows, vocab] at each row's last position ([rows, reads, vocab] at its read
        positions), every edge received at ``layer`` (``n_layers``: the logits)."""
        fw, rows = self.fw, e.rows
        if layer == fw.n_layers:  # the logits read the final residual at the read positions
            final = block.base[f"blocks.{layer - 1}.hook_resid_post"]
            x = at_reads(final, rows.read_pos, rows.prompt) + e.delta[rows.final]
            return fw.final_logits(x)
        x = block.base[f"blocks.{layer}.hook_resid_pre"][rows.tok_prompt, rows.tok_pos]
        for i in range(layer, fw.n_layers):
            keys = block.base[f"blocks.{i}.attn.hook_k"]
            values = block.base[f"blocks.{i}.attn.hook_v"]
            at = self._receiver(i, e) if i == layer else _unchanged
            x = fw.block(i, x, rows, keys, values, at, False)
        return fw.final_logits(x[rows.final])

    def _receiver(self, i: int, e: EdgeRows) -> Trace:
        """The receiving block's trace: each row's receiver, and only it, reads the
        residual plus its sender's change (a head's q, k or v; an MLP's output); the rest
        of the block is the model's."""
        fw = self.fw
        mlp_reads = "resid_pre" if fw.PARALLEL else "resid_mid"
        tok_edge = e.rows.tok_row // e.n  # each packed token's edge (its receiver)
        by_kind: dict[str, list[int]] = {}
        for j, r in enumerate(e.receivers):
            by_kind.setdefault(r.kind, []).append(j)
        device = e.delta.device
        seen: dict[str, torch.Tensor] = {}

        def tokens(kind: str) -> torch.Tensor:
            chosen = torch.tensor(by_kind[kind], device=device)
            return torch.nonzero(torch.isin(tok_edge, chosen)).flatten()

        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            if name in ("resid_pre", "resid_mid"):
                seen[name] = act
            elif name in KINDS and name in by_kind:
                toks = tokens(name)
                new = fw.qkv(i, seen["resid_pre"][toks] + e.delta[toks])[KINDS.index(name)]
                heads = torch.tensor([r.head for r in e.receivers], device=device)[tok_edge[toks]]
                at_tok = torch.arange(len(toks), device=device)
                act = act.clone()
                act[toks, heads] = new[at_tok, heads].to(act.dtype)
            elif name == "mlp_out" and "mlp" in by_kind:
                toks = tokens("mlp")
                act = act.clone()
                act[toks] = fw.mlp(i, seen[mlp_reads][toks] + e.delta[toks]).to(act.dtype)
            return act

        return at


def _unchanged(name: str, act: torch.Tensor) -> torch.Tensor:
    return act


def edge_values(
    forward: SuffixForward,
    block: BlockRuns,
    edges: Sequence[tuple[Node, Node]],
    metrics: tuple[str, ...],
    per_forward: int = 64,
    delta: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """[metric, edge, prompt] the metric with each edge patched, ``per_forward`` edges of
    one receiver layer per batched forward. ``delta``: the senders' ``deltas`` when the
    block keeps them (a worker's cached runs), else computed here."""
    run = EdgeForward(forward)
    out = torch.full((len(metrics), len(edges), block.n), float("nan"), device=block.last.device)
    by_layer: dict[int, list[int]] = {}
    for j, (_, r) in enumerate(edges):
        by_layer.setdefault(r.layer, []).append(j)
    with torch.inference_mode():
        if delta is None:
            delta = deltas(forward, block, sorted({s for s, _ in edges}, key=lambda s: s.name))
        for layer, idx in sorted(by_layer.items()):
            for a in range(0, len(idx), per_forward):
                part = idx[a : a + per_forward]
                e = edge_rows([edges[j] for j in part], delta, block)
                values = block.evaluate(metrics, run.logits(layer, e, block))
                out[:, part] = values.reshape(len(metrics), len(part), block.n).to(out.dtype)
    return out
