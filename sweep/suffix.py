"""The suffix forward: compute only what a patch at (layer, position) can change.

A patch at layer l, position p leaves every layer before l and, under causal attention,
every position before p unchanged. So this forward starts at layer l from the cached
residual, recomputes positions p..last only, takes the keys and values of positions before
p from the cached run, and unembeds each row's last position only.

Rows of one batch may start at different positions. Position-wise work (layer norms,
projections, MLP: almost all FLOPs) runs on the packed suffix tokens of all rows, so no
row pays for another's longer suffix; attention runs padded to [rows, heads, seq, seq],
which costs seq^2 rather than seq * d_model^2 per row.

It implements the pre-norm GPT-2 family block (the model's own layer norm or RMS norm
modules, or none; standard position embeddings; full multi-head attention; any
position-wise MLP, or none in attention-only models).
The engine traces ``SuffixForward.block`` against the model's own hooks at start-up and
uses the model's hooked forward instead where a model is not of this family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Patch = Callable[[torch.Tensor], torch.Tensor]

STAGES = (
    "resid_pre",
    "q",
    "k",
    "v",
    "pattern",
    "z",
    "attn_out",
    "resid_mid",
    "mlp_out",
    "resid_post",
)
"""The points inside a block where a patch can land, in the order the block reaches them."""


@dataclass(frozen=True)
class Rows:
    """One batch: the prompt each row copies and the suffix of positions it recomputes.

    Tokens are packed row after row: row r owns tokens ``offset[r] .. offset[r] + n[r] - 1``,
    which are its positions ``start[r] .. last[r]``.
    """

    prompt: torch.Tensor
    """[R] index of the cached prompt this row starts from."""
    start: torch.Tensor
    """[R] first recomputed position."""
    last: torch.Tensor
    """[R] the position whose logits the metric reads."""
    offset: torch.Tensor
    """[R] index of the row's first packed token."""
    tok_row: torch.Tensor
    """[T] row of each packed token."""
    tok_pos: torch.Tensor
    """[T] position of each packed token."""

    @classmethod
    def make(cls, prompt: torch.Tensor, start: torch.Tensor, last: torch.Tensor) -> Rows:
        n = last - start + 1
        offset = torch.cumsum(n, 0) - n
        tok_row = torch.repeat_interleave(torch.arange(len(n), device=n.device), n)
        tok_pos = start[tok_row] + torch.arange(len(tok_row), device=n.device) - offset[tok_row]
        return cls(prompt, start, last, offset, tok_row, tok_pos)

    @property
    def tok_prompt(self) -> torch.Tensor:
        return self.prompt[self.tok_row]

    @property
    def final(self) -> torch.Tensor:
        """[R] packed index of each row's last position."""
        return self.offset + self.last - self.start


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


class SuffixForward:
    """The model's blocks, run on packed suffix tokens with cached keys and values."""

    def __init__(self, model: Any) -> None:
        cfg = model.cfg
        self.n_heads = int(cfg.n_heads)
        self.d_head = int(cfg.d_head)
        self.n_layers = int(cfg.n_layers)
        scale = float(getattr(cfg, "attn_scale", -1.0) or -1.0)
        self.scale = 1.0 / (scale if scale > 0 else math.sqrt(self.d_head))
        self.ln_final = model.ln_final
        self.unembed = model.unembed
        with torch.no_grad():
            w = [model.W_Q, model.W_K, model.W_V]  # each [L, H, d, dh]
            b = [model.b_Q, model.b_K, model.b_V]
            self.layers = [
                _Layer(
                    ln1=model.blocks[i].ln1,
                    ln2=getattr(model.blocks[i], "ln2", None),
                    mlp=getattr(model.blocks[i], "mlp", None),
                    w_qkv=torch.cat([x[i].permute(1, 0, 2).flatten(1) for x in w], 1).clone(),
                    b_qkv=torch.cat([x[i].flatten() for x in b]).clone(),
                    w_o=model.W_O[i].flatten(0, 1).clone(),
                    b_o=model.b_O[i].clone(),
                )
                for i in range(self.n_layers)
            ]

    @staticmethod
    def unsupported(model: Any) -> str | None:
        """Why this model's blocks are not ones this forward implements, or None."""
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

    def forward(
        self,
        layer: int,
        x: torch.Tensor,
        rows: Rows,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        stage: str | None = None,
        patch: Patch | None = None,
    ) -> torch.Tensor:
        """Logits [R, vocab] at each row's last position.

        ``x`` [T, d_model] is the residual entering ``layer`` at the packed tokens;
        ``keys``/``values`` [P, S, H, d_head] per layer are the cached run's; ``patch``
        rewrites the activation at ``stage`` of ``layer`` (packed, or [R, H, S, S] for
        the pattern).
        """
        for i in range(layer, self.n_layers):
            here = stage if i == layer else None
            x = self.block(i, x, rows, keys[i], values[i], here, patch)
        final = x[rows.final].unsqueeze(0)
        return self.unembed(self.ln_final(final))[0]

    def block(
        self,
        i: int,
        x: torch.Tensor,
        rows: Rows,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        stage: str | None = None,
        patch: Patch | None = None,
        trace: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One block on the packed tokens; ``trace`` (if given) records every stage."""

        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            if patch is not None and name == stage:
                act = patch(act)
            if trace is not None:
                trace[name] = act
            return act

        w = self.layers[i]
        h, dh = self.n_heads, self.d_head
        x = at("resid_pre", x)
        qkv = w.ln1(x.unsqueeze(0))[0] @ w.w_qkv + w.b_qkv
        q, k, v = (
            at(n, t.reshape(-1, h, dh)) for n, t in zip("qkv", qkv.chunk(3, -1), strict=True)
        )
        explicit = trace is not None or (patch is not None and stage == "pattern")
        z = self._attend(q, k, v, rows, k_cache, v_cache, at if explicit else None)
        z = at("z", z)
        attn_out = at("attn_out", z.flatten(1) @ w.w_o + w.b_o)
        if w.mlp is None:  # attention-only
            return at("resid_post", x + attn_out)
        assert w.ln2 is not None
        mid = at("resid_mid", x + attn_out)
        mlp_out = at("mlp_out", w.mlp(w.ln2(mid.unsqueeze(0)))[0])
        return at("resid_post", mid + mlp_out)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: Rows,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        at: Callable[[str, torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """Attention of the packed queries over cached prefix + recomputed suffix keys.

        With ``at`` the pattern is materialised and passed through it (to patch or trace
        it); otherwise the fused kernel runs.
        """
        r, p = rows.tok_row, rows.tok_pos
        keys = k_cache[rows.prompt]  # [R, S, H, dh]: the prefix stays as cached
        vals = v_cache[rows.prompt]
        keys[r, p] = k.to(keys.dtype)
        vals[r, p] = v.to(vals.dtype)
        queries = torch.zeros_like(keys)
        queries[r, p] = q.to(keys.dtype)
        qh, kh, vh = (t.transpose(1, 2) for t in (queries, keys, vals))  # [R, H, S, dh]
        if at is not None:
            seq = qh.shape[2]
            scores = (qh @ kh.transpose(-1, -2)) * self.scale
            mask = torch.ones(seq, seq, dtype=torch.bool, device=qh.device).tril()
            pattern = at("pattern", scores.masked_fill(~mask, float("-inf")).softmax(-1))
            out = pattern.to(vh.dtype) @ vh
        else:
            out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=self.scale)
        return out.transpose(1, 2)[r, p]  # [T, H, dh]
