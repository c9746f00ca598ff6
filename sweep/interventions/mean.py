"""``intervention=mean``: the clean run with the cell set to its mean over prompts.

The mean is taken position by position over the task's clean prompts (prompts that end
earlier are left out of a position's mean), or over a reference file's prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from sweep.components import Component
from sweep.engine.cells import pad_tokens, position_sums
from sweep.interventions.base import Context, Intervention
from sweep.interventions.specs import MeanSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


class Mean(Intervention):
    KIND = "mean"
    SPEC = MeanSpec

    def prepare(self, ctx: Context) -> None:
        """The mean at each position, in one pass over the prompts, ``ctx.chunk`` at a time."""
        sums: dict[str, list[torch.Tensor]] = {}
        width = ctx.task.seq_len
        for tokens, lengths in self._prompts(ctx):
            acts = ctx.run(tokens, lengths, ctx.hooks)
            for c, layer in ctx.grid:
                hook = c.hook_name(layer)
                parts = [pad_tokens(c, x, width) for x in position_sums(c, acts[hook], lengths)]
                if hook in sums:
                    sums[hook] = [a + b for a, b in zip(sums[hook], parts, strict=True)]
                else:
                    sums[hook] = parts
        self.means = {h: total / count.clamp(min=1) for h, (total, count) in sums.items()}

    def _prompts(self, ctx: Context) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(tokens, lengths) of the prompts to average over, ``ctx.chunk`` at a time: the
        task's clean prompts, or the reference file's (each of the task's longest length)."""
        from sweep.tasks.tokenize import reference_tokens

        reference = getattr(self.spec, "reference", None)
        if reference is None:
            n = ctx.task.n_prompts
            for i in range(0, n, ctx.chunk):
                prompts = np.arange(i, min(i + ctx.chunk, n))
                yield ctx.task.rows(prompts)[0], torch.from_numpy(ctx.task.lengths[prompts])
            return
        tokens = reference_tokens(reference, ctx.model, ctx.task.seq_len)
        full = torch.full((tokens.shape[0],), tokens.shape[1])
        for i in range(0, tokens.shape[0], ctx.chunk):
            yield tokens[i : i + ctx.chunk], full[i : i + ctx.chunk]

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        act = block.base[c.hook_name(layer)]
        # The block pads to its own longest prompt: cut the mean to the block's positions.
        mean = pad_tokens(c, self.means[c.hook_name(layer)], block.seq_len)
        return [mean.expand_as(act)]
