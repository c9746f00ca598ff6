"""The suffix forward of the GPT-2 family of blocks.

Pre-norm blocks with the model's own norm modules (LayerNorm, RMSNorm, folded norms in
compatibility mode) or none; position embeddings added at the input; full multi-head
attention; any position-wise MLP (gated too) or none (attention-only models). Other
families fall back to the hooked forward, with the reason in the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from sweep.engine.forward.suffix import Projections, Rows, SuffixForward, Trace, attend


@dataclass(frozen=True)
class _Layer:
    ln1: Any
    ln2: Any | None
    mlp: Any | None
    """None in attention-only models."""
    w_qkv: torch.Tensor
    """[d_model, 3 * heads * d_head]: one matmul for q, k and v."""
    b_qkv: torch.Tensor
    w_o: torch.Tensor
    """[heads * d_head, d_model]"""
    b_o: torch.Tensor


class GPT2Forward(SuffixForward):
    PARALLEL = False

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        cfg = model.cfg
        self.n_heads = int(cfg.n_heads)
        self.d_head = int(cfg.d_head)
        scale = float(getattr(cfg, "attn_scale", -1.0) or -1.0)
        self.scale = 1.0 / (scale if scale > 0 else math.sqrt(self.d_head))
        with torch.no_grad():
            # Each of these stacks every layer's weights when read: read once, not per layer.
            w = [model.W_Q, model.W_K, model.W_V]  # each [L, H, d, dh]
            b = [model.b_Q, model.b_K, model.b_V]
            w_o, b_o = model.W_O, model.b_O
            self.layers = [
                _Layer(
                    ln1=model.blocks[i].ln1,
                    ln2=getattr(model.blocks[i], "ln2", None),
                    mlp=getattr(model.blocks[i], "mlp", None),
                    w_qkv=torch.cat([x[i].permute(1, 0, 2).flatten(1) for x in w], 1).clone(),
                    b_qkv=torch.cat([x[i].flatten() for x in b]).clone(),
                    w_o=w_o[i].flatten(0, 1).clone(),
                    b_o=b_o[i].clone(),
                )
                for i in range(self.n_layers)
            ]
        self._projections: dict[int, Projections] = {}

    @staticmethod
    def unsupported(model: Any) -> str | None:
        cfg = model.cfg
        checks = [
            (
                getattr(cfg, "positional_embedding_type", "standard") != "standard",
                "its position embeddings are not added at the input (e.g. rotary)",
            ),
            (bool(getattr(cfg, "parallel_attn_mlp", False)), "it has parallel attention/MLP"),
            (
                getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads),
                "it has grouped-query attention",
            ),
            (
                not all(hasattr(model, w) for w in ("W_Q", "W_K", "W_V", "W_O")),
                "it does not expose per-head attention weights",
            ),
        ]
        reasons = [why for bad, why in checks if bad]
        return "; ".join(reasons) or None

    def block(
        self,
        i: int,
        x: torch.Tensor,
        rows: Rows,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        at: Trace,
        explicit: bool,
    ) -> torch.Tensor:
        w = self.layers[i]
        x = at("resid_pre", x)
        q, k, v = (at(n, t) for n, t in zip("qkv", self.qkv(i, x), strict=True))
        z = at("z", attend(q, k, v, rows, k_cache, v_cache, self.scale, at if explicit else None))
        attn_out = at("attn_out", z.flatten(1) @ w.w_o + w.b_o)
        if w.mlp is None:  # attention-only
            return at("resid_post", x + attn_out)
        mid = at("resid_mid", x + attn_out)
        mlp_out = at("mlp_out", self.mlp(i, mid))
        return at("resid_post", mid + mlp_out)

    def qkv(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k and v [T, heads, d_head] of the residual ``x`` [T, d_model]."""
        w = self.layers[i]
        qkv = w.ln1(x.unsqueeze(0))[0] @ w.w_qkv + w.b_qkv
        return tuple(t.reshape(-1, self.n_heads, self.d_head) for t in qkv.chunk(3, -1))

    def projections(self, i: int) -> Projections:
        if i not in self._projections:
            w, d = self.layers[i], self.n_heads * self.d_head
            heads = [
                (w.w_qkv[:, k * d : (k + 1) * d].T.reshape(self.n_heads, self.d_head, -1)
                 .contiguous(), w.b_qkv[k * d : (k + 1) * d].view(self.n_heads, self.d_head))
                for k in range(3)
            ]  # fmt: skip
            self._projections[i] = Projections(w.ln1, tuple(heads))
        return self._projections[i]

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP's output [T, d_model] of the residual ``x`` it reads."""
        w = self.layers[i]
        assert w.mlp is not None and w.ln2 is not None, "an attention-only model has no MLP"
        return w.mlp(w.ln2(x.unsqueeze(0)))[0]

    def head_write(self, i: int, h: int, z: torch.Tensor) -> torch.Tensor:
        """What head ``h`` writes into the residual stream: [..., d_model] of its z
        [..., d_head] (without the output bias, which no head owns)."""
        w_o = self.layers[i].w_o.view(self.n_heads, self.d_head, -1)[h]
        return z @ w_o.to(z.dtype)
