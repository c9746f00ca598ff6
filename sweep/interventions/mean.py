"""``intervention=mean``: the clean run with the cell set to its mean over prompts.

The mean is taken position by position over the task's clean prompts (prompts that end
earlier are left out of a position's mean), or over a reference file's prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sweep.components import Component
from sweep.engine.cells import position_mean
from sweep.interventions.base import Context, Intervention
from sweep.spec import InterventionSpec, existing_file, file_digest

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


@dataclass(frozen=True, slots=True)
class MeanSpec(InterventionSpec):
    KIND = "mean"

    kind: str = "mean"
    reference: str | None = None
    """JSON Lines of prompts to average over (``{"prompt": ...}`` or task lines, whose
    ``clean`` is used); null averages over the task's clean prompts."""

    def __post_init__(self) -> None:
        if self.reference is not None:
            ref = existing_file("intervention.reference", self.reference)
            object.__setattr__(self, "reference", ref)

    def identity(self) -> dict[str, Any]:
        ref = self.reference
        return {"kind": self.kind, "reference": ref and file_digest("intervention.reference", ref)}


class Mean(Intervention):
    KIND = "mean"
    SPEC = MeanSpec

    def prepare(self, ctx: Context) -> None:
        from sweep.tasks.tokenize import reference_tokens

        reference = getattr(self.spec, "reference", None)
        if reference is None:
            tokens, lengths = ctx.task.clean, ctx.task.lengths
        else:
            tokens = reference_tokens(reference, ctx.model, ctx.task.seq_len)
            lengths = torch.full((tokens.shape[0],), tokens.shape[1])
        acts = ctx.run(tokens, ctx.hooks)
        self.means: dict[str, torch.Tensor] = {}
        for c, layer in ctx.grid:
            hook = c.hook_name(layer)
            self.means[hook] = position_mean(c, acts[hook], lengths)[:1]

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        act = block.base[c.hook_name(layer)]
        mean = self.means[c.hook_name(layer)]
        # The block pads to its own longest prompt: cut the mean to the block's positions.
        cut = tuple(
            slice(0, act.shape[1 + i]) if a in c.layout.token_axes else slice(None)
            for i, a in enumerate(c.layout.axes)
        )
        return [mean[(slice(None), *cut)].expand_as(act)]
