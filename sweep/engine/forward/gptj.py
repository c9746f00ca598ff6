"""GPT-J: partial rotary embeddings in the interleaved layout (pairs of adjacent dims
rotate together, not the two halves), attention and MLP in parallel from one layer norm,
and no key/value grouping."""

from __future__ import annotations

import torch

from sweep.engine.forward.decoder import DecoderForward, by_head
from sweep.engine.forward.suffix import Projections


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    a, b = x[..., ::2], x[..., 1::2]
    return torch.stack((-b, a), dim=-1).flatten(-2)


class GPTJForward(DecoderForward):
    FAMILY = "GPT-J"
    LAYERS = ("GPTJBlock",)
    PARALLEL = True

    def qkv(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layer, attn = self.layers[i], self.attn(i)
        h = layer.ln_1(x.unsqueeze(0))[0]
        shape = (-1, self.n_heads, self.d_head)
        return attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)

    def projections(self, i: int) -> Projections:
        if i not in self._projections:
            attn, h, dh = self.attn(i), self.n_heads, self.d_head
            mods = (attn.q_proj, attn.k_proj, attn.v_proj)
            parts = tuple(by_head(m.weight, m.bias, h, dh) for m in mods)
            self._projections[i] = Projections(self.layers[i].ln_1, parts)
        return self._projections[i]

    def attn_out(self, i: int, z: torch.Tensor) -> torch.Tensor:
        return self.attn(i).out_proj(z.flatten(1))

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        return layer.mlp(layer.ln_1(x.unsqueeze(0)))[0]

    def window(self, i: int) -> int | None:
        return None

    def cos_sin(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GPT-J's own sinusoid table for positions 0..n-1 (its module gives sin first)."""
        key = (n, like.dtype)
        if key not in self._cos_sin:
            assert self.rotary is not None
            positions = torch.arange(n, device=like.device)[None]
            sin, cos = self.rotary(like.new_zeros(1, n, self.d_head), positions)
            self._cos_sin[key] = (cos[0].to(like.dtype), sin[0].to(like.dtype))
        return self._cos_sin[key]

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Pairs of adjacent dims rotate together, over the first ``rotary_dim`` dims."""
        cos = cos.repeat_interleave(2, -1).unsqueeze(-2)
        sin = sin.repeat_interleave(2, -1).unsqueeze(-2)
        rd = cos.shape[-1]
        rot, rest = x[..., :rd], x[..., rd:]
        return torch.cat([rot * cos + rotate_every_two(rot) * sin, rest], dim=-1)
