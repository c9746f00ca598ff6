"""The Llama family: Llama, Mistral, Qwen2.

Pre-norm blocks with RMSNorm, rotary position embeddings (NeoX layout), grouped-query
attention, a gated MLP (SwiGLU); Mistral adds a sliding window, Qwen2 biases on q, k and v
(both come with the model's own modules and config).
"""

from __future__ import annotations

from sweep.engine.forward.decoder import DecoderForward


class LlamaForward(DecoderForward):
    FAMILY = "Llama-family (Llama, Mistral, Qwen2)"
    LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer")
