"""Suffix forwards of Hugging Face decoder layers: the model's own modules, on packed tokens.

Llama-, Mistral-, Qwen2-, Gemma 2- and GPT-NeoX-shaped models come through
``TransformerBridge.boot_transformers`` with their Hugging Face layers inside the bridge.
A family's module says how its layer turns the residual into q, k, v, how it rotates
them, and how attention and MLP outputs are added back; everything else is here: rotary
position embeddings applied at each recomputed position's own index (full or partial,
from the model's own rotary module), grouped-query attention over keys and values kept
per key/value head, sliding windows, attention-logit and final-logit soft-capping. The
start-up check compares every stage with the model's own hooks, as for GPT-2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sweep.engine.forward.suffix import Projections, Rows, SuffixForward, Trace


def by_head(
    weight: torch.Tensor, bias: torch.Tensor | None, heads: int, d_head: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear layer's [heads * d_head, d_model] weight (and bias) as [heads, d_head,
    d_model] (and [heads, d_head])."""
    w = weight.detach().reshape(heads, d_head, -1)
    return w, None if bias is None else bias.detach().reshape(heads, d_head)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class DecoderForward(SuffixForward):
    """Shared by the Hugging Face decoder families; a family supplies ``qkv``,
    ``attn_out`` and ``mlp`` (and ``PARALLEL`` for a parallel attention + MLP block)."""

    LAYERS: ClassVar[tuple[str, ...]] = ()
    """The Hugging Face decoder layer classes this family runs."""
    FAMILY: ClassVar[str] = ""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.hf = model.original_model
        self.config = self.hf.config
        self.layers = [b._original_component for b in model.blocks]
        cfg = model.cfg
        self.n_heads = int(cfg.n_heads)
        self.n_kv = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        self.d_head = int(cfg.d_head)
        self.rotary = getattr(model, "rotary_emb", None) or next(
            (m for n, m in self.hf.named_modules() if n.endswith("rotary_emb")), None
        )
        self.final_cap = getattr(self.config, "final_logit_softcapping", None)
        self._cos_sin: dict[tuple[int, Any], tuple[torch.Tensor, torch.Tensor]] = {}
        self._w_o: dict[int, torch.Tensor] = {}
        self._projections: dict[int, Projections] = {}

    @classmethod
    def unsupported(cls, model: Any) -> str | None:
        hf = getattr(model, "original_model", None)
        blocks = getattr(model, "blocks", [])
        kinds = {type(getattr(b, "_original_component", None)).__name__ for b in blocks}
        if hf is None or not kinds or not kinds <= set(cls.LAYERS):
            return f"its blocks ({', '.join(sorted(kinds)) or 'none'}) are not {cls.FAMILY} layers"
        if getattr(model, "compatibility_mode", False):
            return "compatibility mode processes its weights outside the model's own layers"
        return None

    # ---------------------------------------------------------------- what a family says

    def attn(self, i: int) -> Any:
        layer = self.layers[i]
        return next(
            getattr(layer, n) for n in ("self_attn", "attention", "attn") if hasattr(layer, n)
        )

    def qkv(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q [T, H, dh], k and v [T, H_kv, dh] (before rotary) of the residual ``x``."""
        layer, attn = self.layers[i], self.attn(i)
        h = layer.input_layernorm(x.unsqueeze(0))[0]
        q = attn.q_proj(h).view(-1, self.n_heads, self.d_head)
        k = attn.k_proj(h).view(-1, self.n_kv, self.d_head)
        v = attn.v_proj(h).view(-1, self.n_kv, self.d_head)
        return q, k, v

    def projections(self, i: int) -> Projections | None:
        """Llama, Mistral and Qwen2: the input norm and q_proj, k_proj, v_proj by head."""
        attn = self.attn(i)
        if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj")):
            return None
        if i not in self._projections:
            heads = (self.n_heads, self.n_kv, self.n_kv)
            mods = (attn.q_proj, attn.k_proj, attn.v_proj)
            self._projections[i] = Projections(self.layers[i].input_layernorm, tuple(
                by_head(m.weight, m.bias, n, self.d_head) for m, n in zip(mods, heads,
                                                                          strict=True)
            ))  # fmt: skip
        return self._projections[i]

    def attn_out(self, i: int, z: torch.Tensor) -> torch.Tensor:
        return self.attn(i).o_proj(z.flatten(1))

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        return layer.mlp(layer.post_attention_layernorm(x.unsqueeze(0)))[0]

    def head_write(self, i: int, h: int, z: torch.Tensor) -> torch.Tensor:
        """What head ``h`` writes into the residual stream: [..., d_model] of its z
        [..., d_head] (its rows of the output projection, without the projection's bias)."""
        if i not in self._w_o:  # the projection's matrix, read off its own module
            eye = torch.eye(self.n_heads * self.d_head, dtype=z.dtype, device=z.device)
            basis = eye.view(-1, self.n_heads, self.d_head)
            bias = self.attn_out(i, torch.zeros_like(basis[:1]))
            self._w_o[i] = (self.attn_out(i, basis) - bias).view(self.n_heads, self.d_head, -1)
        return z @ self._w_o[i][h].to(z.dtype)

    def scaling(self, i: int) -> float:
        """What attention scores are multiplied by (1/sqrt(d_head), or the model's own)."""
        return float(self.attn(i).scaling)

    def window(self, i: int) -> int | None:
        """Keys a query sees (a sliding window), or None for all earlier ones."""
        types = getattr(self.config, "layer_types", None)
        if types is not None:
            return self.config.sliding_window if types[i] == "sliding_attention" else None
        if getattr(self.config, "use_sliding_window", True) is False:
            return None
        return getattr(self.config, "sliding_window", None)

    # ---------------------------------------------------------------- the block

    def block(
        self, i: int, x: torch.Tensor, rows: Rows, k_cache: torch.Tensor,
        v_cache: torch.Tensor, at: Trace, explicit: bool,
    ) -> torch.Tensor:  # fmt: skip
        x = at("resid_pre", x)
        q, k, v = self.qkv(i, x)
        q, k, v = at("q", q), at("k", k), at("v", v)
        z = at("z", self.attend(i, q, k, v, rows, k_cache, v_cache, at if explicit else None))
        attn_out = at("attn_out", self.attn_out(i, z))
        if self.PARALLEL:
            mlp_out = at("mlp_out", self.mlp(i, x))
            return at("resid_post", x + attn_out + mlp_out)
        mid = at("resid_mid", x + attn_out)
        mlp_out = at("mlp_out", self.mlp(i, mid))
        return at("resid_post", mid + mlp_out)

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().final_logits(x)
        if self.final_cap:  # Gemma 2 soft-caps its logits after the unembedding
            return torch.tanh(logits / self.final_cap) * self.final_cap
        return logits

    # ---------------------------------------------------------------- rotary attention

    def cos_sin(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own rotary tables for positions 0..n-1: [n, rotary dims]."""
        key = (n, like.dtype)
        if key not in self._cos_sin:
            assert self.rotary is not None, "a rotary family without the model's rotary module"
            positions = torch.arange(n, device=like.device)[None]
            cos, sin = self.rotary(like.new_zeros(1, n, self.d_head), positions)
            self._cos_sin[key] = (cos[0].to(like.dtype), sin[0].to(like.dtype))
        return self._cos_sin[key]

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of ``x`` [..., heads, dh] with cos/sin [..., rotary dims] (the
        NeoX layout: halves; partial rotary leaves the other dims as they are)."""
        rd = cos.shape[-1]
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
        rot, rest = x[..., :rd], x[..., rd:]
        return torch.cat([rot * cos + rotate_half(rot) * sin, rest], dim=-1)

    def attend(
        self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: Rows,
        k_cache: torch.Tensor, v_cache: torch.Tensor, at: Trace | None,
    ) -> torch.Tensor:  # fmt: skip
        """Attention of the packed queries over cached prefix + recomputed suffix keys,
        rotated at their own positions."""
        attn = self.attn(i)
        r, p = rows.tok_row, rows.tok_pos
        keys = k_cache[rows.prompt]  # [R, S, H_kv, dh], before rotary
        vals = v_cache[rows.prompt]
        keys[r, p] = k.to(keys.dtype)
        vals[r, p] = v.to(vals.dtype)
        seq = keys.shape[1]
        cos, sin = self.cos_sin(seq, keys)
        keys = self.rotate(keys, cos, sin)
        queries = keys.new_zeros(keys.shape[0], seq, self.n_heads, self.d_head)
        queries[r, p] = self.rotate(q.to(keys.dtype), cos[p], sin[p])
        qh, kh, vh = (t.transpose(1, 2) for t in (queries, keys, vals))  # [R, heads, S, dh]
        groups = self.n_heads // self.n_kv
        kh, vh = kh.repeat_interleave(groups, 1), vh.repeat_interleave(groups, 1)
        scale = self.scaling(i)
        pos = torch.arange(seq, device=qh.device)
        mask = pos[None, :] <= pos[:, None]
        window = self.window(i)
        if window:
            mask &= pos[:, None] - pos[None, :] < window
        cap = getattr(attn, "attn_logit_softcapping", None)
        if at is not None or cap:
            scores = (qh @ kh.transpose(-1, -2)) * scale
            if cap:
                scores = torch.tanh(scores / cap) * cap
            pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
            if at is not None:
                pattern = at("pattern", pattern)
            out = pattern.to(vh.dtype) @ vh
        else:
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
        return out.transpose(1, 2)[r, p]  # [T, H, dh]
