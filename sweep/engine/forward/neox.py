"""GPT-NeoX (Pythia): one joint q/k/v projection, partial rotary embeddings (the first
``rotary_pct`` of each head's dims), and attention and MLP in parallel from the same
residual (so there is no ``resid_mid``)."""

from __future__ import annotations

import torch

from sweep.engine.forward.decoder import DecoderForward


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

    def attn_out(self, i: int, z: torch.Tensor) -> torch.Tensor:
        return self.attn(i).dense(z.flatten(1))
