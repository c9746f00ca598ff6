"""Exact edge patching on the suffix forward (GPT-2 family blocks).

An edge (sender -> receiver) is patched by giving the receiver, and only it, the residual
stream it reads plus the sender's change: ``source output - base output`` of the sender,
at every position. Nothing before the receiver's layer changes, and under causal attention
nothing before the first position where that change is non-zero, so each row's forward
starts at the receiver's layer and that position, from the cached base run; many edges of
one receiver layer share a batched forward. Everything after the receiver recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sweep.edges.graph import Node
from sweep.engine.forward.gpt2 import GPT2Forward
from sweep.engine.forward.suffix import Rows, Trace

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


def sender_outputs(model: Any, cache: dict[str, torch.Tensor], n: Node) -> torch.Tensor:
    """What a sender wrote into the residual stream, [prompt, pos, d_model] (a head's
    output without the attention bias, which every head shares and no patch changes)."""
    if n.kind == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if n.kind == "mlp":
        return cache[f"blocks.{n.layer}.hook_mlp_out"]
    z = cache[f"blocks.{n.layer}.attn.hook_z"][:, :, n.head]
    return z @ model.W_O[n.layer, n.head].to(z.dtype)


def deltas(model: Any, block: BlockRuns, senders: Sequence[Node]) -> dict[str, torch.Tensor]:
    """Each sender's change, source minus base, [prompt, pos, d_model]; zero past each
    prompt's end (padding is never read)."""
    seq = block.clean_tokens.shape[1]
    inside = torch.arange(seq, device=block.last.device)[None, :] <= block.last[:, None]
    out = {}
    for s in senders:
        d = sender_outputs(model, block.source, s) - sender_outputs(model, block.base, s)
        out[s.name] = d * inside[..., None].to(d.dtype)
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
    start = torch.minimum(first.flatten(), last)  # a sender that changes nothing: last only
    rows = Rows.make(prompt, start, last)
    edge = rows.tok_row // n
    return EdgeRows(rows, stacked[edge, rows.tok_prompt, rows.tok_pos],
                    tuple(r for _, r in edges), n)  # fmt: skip


class EdgeForward:
    """Edges into one receiver layer per call, on a GPT-2 family suffix forward."""

    def __init__(self, forward: GPT2Forward) -> None:
        self.fw = forward

    def logits(self, layer: int, e: EdgeRows, block: BlockRuns) -> torch.Tensor:
        """[rows, vocab] at each row's last position, every edge received at ``layer``
        (``n_layers``: the logits)."""
        fw, rows = self.fw, e.rows
        if layer == fw.n_layers:  # the logits read the final residual, last position only
            final = block.base[f"blocks.{layer - 1}.hook_resid_post"]
            x = final[rows.prompt, rows.last] + e.delta[rows.final]
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
        residual plus its sender's change (a head's q, k or v from ``ln1(x + delta)``, an
        MLP's output from ``ln2(mid + delta)``); the rest of the block is the model's."""
        w = self.fw.layers[i]
        h, dh = self.fw.n_heads, self.fw.d_head
        # Each edge's receiver as a code: (q/k/v) * heads + head; MLP -1; logits -2.
        codes = [
            KINDS.index(r.kind) * h + r.head if r.kind in KINDS else -1 - (r.kind != "mlp")
            for r in e.receivers
        ]
        tok_code = torch.tensor(codes, device=e.delta.device)[e.rows.tok_row // e.n]
        seen: dict[str, torch.Tensor] = {}

        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            if name in ("resid_pre", "resid_mid"):
                seen[name] = act
            elif name in KINDS:
                for code in sorted({c for c in codes if c >= 0 and c // h == KINDS.index(name)}):
                    toks = torch.nonzero(tok_code == code).flatten()
                    read = w.ln1((seen["resid_pre"][toks] + e.delta[toks]).unsqueeze(0))[0]
                    cols = slice(code * dh, (code + 1) * dh)  # q, k, v blocks: head-major
                    act[toks, code % h] = read @ w.w_qkv[:, cols] + w.b_qkv[cols]
            elif name == "mlp_out" and -1 in codes:
                assert w.mlp is not None and w.ln2 is not None
                toks = torch.nonzero(tok_code == -1).flatten()
                read = (seen["resid_mid"][toks] + e.delta[toks]).unsqueeze(0)
                act[toks] = w.mlp(w.ln2(read))[0]
            return act

        return at


def _unchanged(name: str, act: torch.Tensor) -> torch.Tensor:
    return act


def edge_values(
    model: Any,
    forward: GPT2Forward,
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
            delta = deltas(model, block, sorted({s for s, _ in edges}, key=lambda s: s.name))
        for layer, idx in sorted(by_layer.items()):
            for a in range(0, len(idx), per_forward):
                part = idx[a : a + per_forward]
                e = edge_rows([edges[j] for j in part], delta, block)
                values = block.evaluate(metrics, run.logits(layer, e, block))
                out[:, part] = values.reshape(len(metrics), len(part), block.n).to(out.dtype)
    return out
