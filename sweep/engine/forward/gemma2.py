"""Gemma 2: the Llama block with norms after attention and around the MLP, attention-logit
soft-capping, sliding-window attention on alternate layers and final-logit soft-capping
(the model scales its embeddings too, which a suffix starting from a cached residual
never recomputes)."""

from __future__ import annotations

import torch

from sweep.engine.forward.decoder import DecoderForward


class Gemma2Forward(DecoderForward):
    FAMILY = "Gemma 2"
    LAYERS = ("Gemma2DecoderLayer",)

    def attn_out(self, i: int, z: torch.Tensor) -> torch.Tensor:
        out = self.attn(i).o_proj(z.flatten(1))
        return self.layers[i].post_attention_layernorm(out.unsqueeze(0))[0]

    def edges_unsupported(self) -> str | None:
        return (
            "Gemma 2 normalises the sum of its heads' outputs (a norm after attention), so "
            "no head writes a share of the residual stream of its own"
        )

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        h = layer.mlp(layer.pre_feedforward_layernorm(x.unsqueeze(0)))
        return layer.post_feedforward_layernorm(h)[0]
