"""The model's own hooked forward from the patched layer: any model TransformerLens runs.

Still batches many cells per forward, skips the layers before the patched one, and
unembeds only each row's read positions (its last; a multi-token answer's); it recomputes
every position, though.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from sweep.components import Component
from sweep.engine import latents
from sweep.engine.cells import Batch, at_reads, hook_patch, read_positions
from sweep.engine.forward.base import Forward, activation_row_bytes
from sweep.models.sae import attached

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

UNEMBED_IN = "unembed.hook_in"


class HookedForward(Forward):
    NAME = "hooks"

    def base_hooks(self, layers: tuple[int, ...]) -> set[str]:
        return {f"blocks.{i}.hook_resid_pre" for i in layers}

    def row_bytes(self, seq_len: int, reads: int = 1) -> int:
        return 2 * activation_row_bytes(self.model, seq_len, reads)  # keeps more than a suffix

    def logits(
        self, c: Component, layer: int, batch: Batch, src: torch.Tensor, block: BlockRuns
    ) -> torch.Tensor:
        x = block.base[f"blocks.{layer}.hook_resid_pre"][batch.prompt]
        at = read_positions(block.last[batch.prompt], block.reads)

        def keep_reads(act: torch.Tensor, hook: Any) -> torch.Tensor:
            picked = at_reads(act, at)  # [rows, d_model] or [rows, reads, d_model]
            return picked.unsqueeze(1) if block.reads == 1 else picked

        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
            (c.model_hook(layer), self.patch(c, layer, src, batch, block)),
            (UNEMBED_IN, keep_reads),
        ]
        logits = self.model.run_with_hooks(x, start_at_layer=layer, fwd_hooks=hooks)
        return logits[:, 0] if block.reads == 1 else logits

    def patch(
        self, c: Component, layer: int, src: torch.Tensor, batch: Batch, block: BlockRuns
    ) -> Callable[[torch.Tensor, Any], Any]:
        if c.latents:  # through the SAE's decoder, from the block's own latents
            hook = c.model_hook(layer)
            sae = attached(self.model)[hook]
            return latents.hook_patch(c, src, block.base[c.hook_name(layer)], batch, sae)
        return hook_patch(c, src, batch)
