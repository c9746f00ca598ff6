"""Edge attribution patching (EAP, Syed et al. 2023) and its integrated-gradients form
(EAP-IG, Hanna et al. 2024): a first-order estimate of every edge from forwards and
backwards of the base run, on a family's suffix forward.

Patching an edge adds the sender's change ``delta_s`` (source minus base output) to the
residual stream its receiver, and only it, reads. To first order the metric then moves by
``sum over positions of delta_s . dM/dx_r``, where ``x_r`` is the receiver's own copy of
the residual stream it reads (before its norm: a head's q, k or v input, an MLP's input,
the logits' final residual). One forward of the base run in which every receiver reads
its own copy (a zero probe added to it), and one backward per metric, give ``dM/dx_r`` for
every receiver at once; each edge's score is then a dot product with its sender's change.

EAP-IG averages the gradient over ``steps`` points of a straight path between the two
runs' *inputs* (the embeddings, ``blocks.0.hook_resid_pre``): the base input plus ``k /
steps`` of (source input - base input), k = 0 .. steps - 1, every activation recomputed
from there, while ``delta_s`` stays the real runs' difference. That is the paper's
"inputs" variant (interpolating the input keeps every activation on a path the model can
produce; interpolating each activation separately does not), and a left Riemann sum, so
``steps=1`` is EAP itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sweep.edges.graph import Node
from sweep.engine.forward.suffix import Rows, SuffixForward

if TYPE_CHECKING:
    from sweep.engine.edges import Deltas
    from sweep.engine.runs import BlockRuns

Metric = Callable[[torch.Tensor], torch.Tensor]
"""Read logits [prompt, vocab] (or [prompt, reads, vocab]) -> [metric, prompt]."""

EMBED_HOOK = "blocks.0.hook_resid_pre"


def block_metric(block: BlockRuns, metrics: tuple[str, ...]) -> Metric:
    """The metrics of a block's prompts from their read logits, differentiable
    (the block's answers and clean logits copied out of inference mode)."""
    from sweep.metrics import evaluate

    with torch.inference_mode(False):
        answer, wrong = block.answer.clone(), block.wrong.clone()
        clean = block.clean_logits.clone()

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return evaluate(metrics, logits, answer, wrong, clean)

    return metric


class _Probes:
    """Zero tensors added to each receiver's copy of the residual stream; their gradients
    are the receivers' input gradients. Packed tokens [T] as the forward's rows."""

    def __init__(self, fw: SuffixForward, rows: Rows, d_model: int, dtype: torch.dtype) -> None:
        device = rows.tok_row.device
        t, self.fw = len(rows.tok_row), fw
        heads = fw.qkv(0, torch.zeros(1, d_model, device=device, dtype=dtype))
        self.counts = [int(x.shape[1]) for x in heads]  # q heads, k and v (key/value) heads
        self.qkv = [
            torch.zeros(sum(self.counts), t, d_model, device=device, dtype=dtype,
                        requires_grad=True)
            for _ in range(fw.n_layers)
        ]  # fmt: skip
        self.mlp = [
            torch.zeros(t, d_model, device=device, dtype=dtype, requires_grad=True)
            for _ in range(fw.n_layers)
        ]
        self.logits = torch.zeros(*rows.final.shape, d_model, device=device, dtype=dtype,
                                  requires_grad=True)  # fmt: skip

    def leaves(self) -> list[torch.Tensor]:
        return [*self.qkv, *self.mlp, self.logits]

    def trace(self, i: int, parallel: bool) -> Callable[[str, torch.Tensor], torch.Tensor]:
        """Block ``i``'s trace: q, k and v per head from that head's own copy of the
        residual, the MLP from its own; values equal the model's (the probes are zero)."""
        fw, seen = self.fw, {}
        reads = "resid_pre" if parallel else "resid_mid"

        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            if name in ("resid_pre", "resid_mid"):
                seen[name] = act
            elif name == "q":
                seen.update(zip("qkv", self._qkv(i, seen["resid_pre"]), strict=True))
                return seen["q"].to(act.dtype)
            elif name in ("k", "v"):
                return seen[name].to(act.dtype)
            elif name == "mlp_out":
                return fw.mlp(i, seen[reads] + self.mlp[i]).to(act.dtype)
            return act

        return at

    def _qkv(self, i: int, resid: torch.Tensor) -> list[torch.Tensor]:
        """q, k and v of block ``i``, each head from its own copy of ``resid`` (plus its
        probe): through ``_CopiesNorm`` where the block's norm is one it writes out."""
        p = self.fw.projections(i)
        norm = None if p is None else _plain_norm(p.norm, resid)
        if p is None or norm is None:
            return per_copy_qkv(self.fw, i, resid[None] + self.qkv[i], self.counts)
        normed = _CopiesNorm.apply(resid, self.qkv[i], *norm)
        return _project(p, normed.split(self.counts), self.counts)


def _plain_norm(module: Any, x: torch.Tensor) -> tuple[Any, ...] | None:
    """(weight, bias, eps, centred) of a TransformerLens norm that computes in float32 or
    float64 from scratch (``NormalizationBridge._python_norm_forward``: LayerNorm or
    RMSNorm, weight not offset, nothing folded, no hooks on it), whose autograd
    ``_CopiesNorm`` writes out; None for any other."""
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge,
    )

    if type(module) is not NormalizationBridge or x.dtype not in (torch.float32, torch.float64):
        return None
    cfg = module.config
    if module.use_native_layernorm_autograd or getattr(cfg, "layer_norm_folding", False):
        return None
    if module.uses_weight_offset or module.weight.dtype != x.dtype:
        return None
    hooks = (module.hook_in, module.hook_scale, module.hook_normalized, module.hook_out)
    if any(h._forward_hooks or h._forward_pre_hooks or h._backward_hooks for h in hooks):
        return None
    bias = None if module.uses_rms_norm else getattr(module.original_component, "bias", None)
    if bias is not None and bias.dtype != x.dtype:
        return None
    return module.weight, bias, float(getattr(cfg, "eps", 1e-05)), not module.uses_rms_norm


class _CopiesNorm(torch.autograd.Function):
    """``norm(x + probe[c])`` for every copy c of the residual ``x`` [T, d], the probes
    [copies, T, d] being zero: the forward normalises ``x`` once; the backward is the
    norm's per copy, the operations autograd runs through the model's own norm written
    out in its order (so the gradients equal it to the bit), with what depends on ``x``
    alone computed once rather than per copy."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, probes: torch.Tensor, weight: torch.Tensor,
        bias: torch.Tensor | None, eps: float, centred: bool,
    ) -> torch.Tensor:  # fmt: skip
        h = x - x.mean(-1, keepdim=True) if centred else x
        s = (h.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        out = h / s * weight
        if bias is not None:
            out = out + bias
        ctx.save_for_backward(h, s, weight)
        ctx.centred = centred
        return out.expand(len(probes), *out.shape).contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        h, s, weight = ctx.saved_tensors
        d = h.shape[-1]
        g_normed = grad * weight  # MulBackward (by the weight)
        g_h = g_normed / s  # DivBackward, h / s: its numerator
        g_s = (-g_normed * ((h / s) / s)).sum(-1, keepdim=True)  # ... its denominator
        g_var = g_s / (2 * s)  # SqrtBackward
        g_h = g_h + g_var / d * (2.0 * h)  # MeanBackward, PowBackward (h squared)
        if ctx.centred:  # SubBackward, MeanBackward: x minus its mean
            g_h = g_h + (-g_h).sum(-1, keepdim=True) / d
        return g_h.sum(0), g_h, None, None, None, None


def _project(p: Any, inputs: Sequence[torch.Tensor], counts: Sequence[int]) -> list[torch.Tensor]:
    """q, k and v [T, heads, d_head], head h of each from ``inputs[j][h]`` [heads, T, d]
    (normed), through its own rows of the projections."""
    result = []
    for x, (w, b), count in zip(inputs, p.weights, counts, strict=True):
        assert len(x) == count
        y = torch.einsum("htd,hed->the", x, w.to(x.dtype))
        result.append(y if b is None else y + b.to(y.dtype))
    return result


def per_copy_qkv(
    fw: SuffixForward,
    i: int,
    copies: torch.Tensor,
    counts: Sequence[int],
    which: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """q, k and v [T, heads, d_head] of block ``i`` where each head reads its own copy of
    the residual: ``copies`` [q heads + k heads + v heads, T, d_model], in that order; or,
    with ``which`` [q heads + k heads + v heads], copy ``which[j]`` of fewer (shared)."""
    if which is None:
        which = torch.arange(sum(counts), device=copies.device)
    p = fw.projections(i)
    if p is not None:  # each head from its own copy, through its own rows only
        normed = p.norm(copies)  # [copies, T, d_model]
        first, result = 0, []
        for count, (w, b) in zip(counts, p.weights, strict=True):
            x = normed.index_select(0, which[first : first + count])  # [head, T, d_model]
            y = torch.einsum("htd,hed->the", x, w.to(x.dtype))
            result.append(y if b is None else y + b.to(y.dtype))
            first += count
        return result
    out = fw.qkv(i, copies.flatten(0, 1))  # each [copies * T, heads, d_head]
    first, result = 0, []
    for count, full in zip(counts, out, strict=True):
        full = full.view(len(copies), -1, *full.shape[1:])
        own = torch.arange(count, device=copies.device)
        result.append(full[which[first : first + count], :, own].transpose(0, 1))  # head h
        first += count
    return result


@dataclass
class Gradients:
    """dM/dx_r of every receiver but the logits, per metric, as one tensor whose last axis
    is the receiver: the layout ``edge_scores`` multiplies, built without further copies."""

    inputs: list[torch.Tensor]
    """[metric] of [prompt, pos, d_model, slot]: slot ``layer * copies + copy`` for the
    q, k and v copies (q heads, then k's, then v's), then ``layers * copies + layer`` for
    the MLPs (none in an attention-only model)."""
    logits: list[torch.Tensor]
    """[metric] of [prompt, d_model]: the final residual at each prompt's last position
    ([prompt, reads, d_model] at its read positions)."""
    counts: tuple[int, int, int]
    """Copies of the q, k and v inputs per layer (heads; key/value heads for k and v)."""
    n_layers: int

    def slot(self, r: Node) -> int:
        """Receiver ``r``'s place on the last axis of ``inputs`` (not the logits)."""
        q, k, _ = self.counts
        copies = sum(self.counts)
        if r.kind == "mlp":
            return self.n_layers * copies + r.layer
        return r.layer * copies + {"q": 0, "k": q, "v": q + k}[r.kind] + r.head

    def of(self, m: int, r: Node) -> torch.Tensor:
        """Receiver ``r``'s gradient for metric ``m``: [prompt, pos, d] ([prompt, d] or
        [prompt, reads, d] for the logits)."""
        if r.kind == "logits":
            return self.logits[m]
        return self.inputs[m][..., self.slot(r)]

    def __add__(self, other: Gradients) -> Gradients:
        def add(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
            return [x + y for x, y in zip(a, b, strict=True)]

        return Gradients(add(self.inputs, other.inputs), add(self.logits, other.logits),
                         self.counts, self.n_layers)  # fmt: skip

    def __truediv__(self, k: float) -> Gradients:
        return Gradients([x / k for x in self.inputs], [x / k for x in self.logits],
                         self.counts, self.n_layers)  # fmt: skip


def receiver_gradients(
    fw: SuffixForward, block: BlockRuns, embed: torch.Tensor, metric: Metric, n_metrics: int
) -> Gradients:
    """dM/dx_r for every receiver, from the base run started at ``embed`` (the input
    residual [prompt, pos, d_model]); every position recomputed, nothing read from a cache."""
    n, seq, d = embed.shape
    d_head = int(fw.model.cfg.d_head)
    # The cached runs are inference tensors, which autograd may not save: copies made
    # outside inference mode are ordinary tensors.
    with torch.inference_mode(False), torch.enable_grad():
        last = block.last.clone()
        rows = Rows.make(
            torch.arange(n, device=last.device), torch.zeros_like(last), last, block.reads
        )
        probes = _Probes(fw, rows, d, embed.dtype)
        x = embed.clone()[rows.tok_prompt, rows.tok_pos]
        for i in range(fw.n_layers):
            k, v = (torch.zeros(n, seq, c, d_head, device=x.device, dtype=x.dtype)
                    for c in probes.counts[1:])  # fmt: skip
            x = fw.block(i, x, rows, k, v, probes.trace(i, fw.PARALLEL), False)
        values = metric(fw.final_logits(x[rows.final] + probes.logits))  # [metric, prompt]
        grads = [torch.autograd.grad(values[m].sum(), probes.leaves(), retain_graph=True,
                                     allow_unused=True) for m in range(n_metrics)]  # fmt: skip
    layers = fw.n_layers
    return Gradients(
        inputs=[_unpack(g[:layers], g[layers : 2 * layers], rows, n, seq) for g in grads],
        logits=[_logits_grad(g[-1], probes.logits) for g in grads],
        counts=(probes.counts[0], probes.counts[1], probes.counts[2]),
        n_layers=layers,
    )


def _logits_grad(g: torch.Tensor | None, probe: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(probe).detach() if g is None else g.detach()


def _unpack(
    qkv: Sequence[torch.Tensor | None],
    mlp: Sequence[torch.Tensor | None],
    rows: Rows,
    n: int,
    seq: int,
) -> torch.Tensor:
    """Packed tokens (per layer [copies, T, d] and [T, d]) to [prompt, pos, d, slot], zero
    past each prompt's end; probes nothing reads (an attention-only model's MLPs) left out.
    Prompts of the full length are packed in that order already: one copy, no scatter."""
    parts = [g.detach().permute(1, 2, 0) for g in qkv if g is not None]
    parts += [g.detach().unsqueeze(-1) for g in mlp if g is not None]
    packed = parts[0].new_empty(*parts[0].shape[:2], sum(p.shape[-1] for p in parts))
    first = 0
    for p in parts:  # [T, d, slot]; copied slice by slice (faster than cat on this layout)
        packed[..., first : first + p.shape[-1]] = p
        first += p.shape[-1]
    if len(packed) == n * seq:  # every prompt full length: row after row, position order
        return packed.view(n, seq, *packed.shape[1:])
    out = packed.new_zeros(n, seq, *packed.shape[1:])
    out[rows.tok_prompt, rows.tok_pos] = packed
    return out


def edge_scores(
    grads: Gradients,
    delta: Deltas,
    edges: Sequence[tuple[Node, Node]],
    read_pos: torch.Tensor,
) -> torch.Tensor:
    """[metric, edge, prompt, pos] each edge's first-order change of the metric, per
    position of its sender's change (their sum over ``pos``: the edge at every position).
    Every sender against every receiver in one batched product per prompt and position
    (the senders' changes are one tensor, ``Deltas.stacked``)."""
    stacked = delta.stacked.float()  # [prompt, pos, sender, d]
    n, seq = stacked.shape[:2]
    n_metrics = len(grads.logits)
    out = torch.zeros(n_metrics, len(edges), n, seq, device=read_pos.device)
    at = read_pos if read_pos.dim() == 2 else read_pos[:, None]  # [prompt, reads] positions
    prompts = torch.arange(n, device=read_pos.device)[:, None].expand_as(at)
    by_receiver: dict[Node, list[int]] = {}
    for j, (_, r) in enumerate(edges):
        by_receiver.setdefault(r, []).append(j)
    inside = [r for r in by_receiver if r.kind != "logits"]
    for m in range(n_metrics):
        if inside:  # [prompt, pos, d, receiver] against [prompt, pos, sender, d]
            slots = [grads.slot(r) for r in inside]
            g = grads.inputs[m]
            if slots != list(range(g.shape[-1])):  # not every receiver, in order
                g = g[..., slots]
            g = g.float()
            every = torch.matmul(stacked, g)  # [prompt, pos, sender, receiver]
            for k, r in enumerate(inside):
                idx = by_receiver[r]
                cols = [delta.column[edges[j][0].name] for j in idx]
                out[m, idx] = every[:, :, cols, k].permute(2, 0, 1)
        for r in by_receiver.keys() - set(inside):  # the logits: the read positions only
            idx = by_receiver[r]
            cols = [delta.column[edges[j][0].name] for j in idx]
            g = grads.of(m, r).float()  # [prompt, d] or [prompt, reads, d]
            placed = g.new_zeros(n, seq, g.shape[-1])
            placed.index_put_((prompts, at), g.reshape(*at.shape, -1), accumulate=True)
            out[m, idx] = torch.einsum("pxsd,pxd->spx", stacked[:, :, cols], placed)
    return out


def integrated_gradients(
    fw: SuffixForward,
    block: BlockRuns,
    base_embed: torch.Tensor,
    source_embed: torch.Tensor,
    metric: Metric,
    steps: int,
    n_metrics: int,
) -> Gradients:
    """``receiver_gradients`` averaged over ``steps`` inputs from the base run's toward the
    source run's (base + k/steps of the difference, k = 0 .. steps - 1; 1 step: EAP)."""
    total: Gradients | None = None
    with torch.inference_mode(False):
        base_embed, source_embed = base_embed.clone(), source_embed.clone()
    for k in range(steps):
        embed = base_embed + (k / steps) * (source_embed - base_embed)
        g = receiver_gradients(fw, block, embed, metric, n_metrics)
        total = g if total is None else total + g
    assert total is not None
    return total / steps
