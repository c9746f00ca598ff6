"""GPT-NeoX (Pythia): one joint q/k/v projection, partial rotary embeddings (the first
``rotary_pct`` of each head's dims), and attention and MLP in parallel from the same
residual (so there is no ``resid_mid``)."""

from __future__ import annotations

import torch

from sweep.engine.forward.decoder import DecoderForward
from sweep.engine.forward.suffix import Projections


class NeoXForward(DecoderForward):
    FAMILY = "GPT-NeoX"
    LAYERS = ("GPTNeoXLayer",)

    @property
    def PARALLEL(self) -> bool:  # type: ignore[override]  # noqa: N802 (as the base's constant)
        return bool(getattr(self.config, "use_parallel_residual", True))

    def qkv(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layer, attn = self.layers[i], self.attn(i)
        h = layer.input_layernorm(x.unsqueeze(0))[0]
        qkv = attn.query_key_value(h).view(-1, self.n_heads, 3 * self.d_head)
        return tuple(t.contiguous() for t in qkv.split(self.d_head, dim=-1))

    def projections(self, i: int) -> Projections:
        """One joint projection whose output is per head q, k, v: its rows by head."""
        if i not in self._projections:
            m, h, dh = self.attn(i).query_key_value, self.n_heads, self.d_head
            w = m.weight.detach().view(h, 3, dh, -1)
            b = None if m.bias is None else m.bias.detach().view(h, 3, dh)
            parts = tuple((w[:, k], None if b is None else b[:, k]) for k in range(3))
            self._projections[i] = Projections(self.layers[i].input_layernorm, parts)
        return self._projections[i]

    def attn_out(self, i: int, z: torch.Tensor) -> torch.Tensor:
        return self.attn(i).dense(z.flatten(1))
