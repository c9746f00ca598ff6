"""``intervention=resample``: the clean run with the cell taken from another prompt.

Each prompt's donors are other prompts of the same token count (and a multi-token answer's
count), drawn with a seeded
generator (same seed, same donors); the value is the mean over ``samples`` draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sweep.components import Component
from sweep.errors import TaskError
from sweep.interventions.base import Context, Intervention
from sweep.interventions.specs import ResampleSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


def donors(
    lengths: torch.Tensor, samples: int, seed: int, forced: np.ndarray | None = None
) -> torch.Tensor:
    """[samples, prompt] another prompt of the same token count for each prompt (and the
    same count of ``forced`` answer tokens, so a multi-token answer's positions line up
    with the donor's). Prompts are grouped once (linear in the task, not quadratic)."""
    gen = torch.Generator().manual_seed(seed)
    lengths_np = lengths.cpu().numpy()
    extra = np.zeros_like(lengths_np) if forced is None else np.asarray(forced)
    keys = list(zip(lengths_np.tolist(), extra.tolist(), strict=True))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    pools = {key: np.array(group) for key, group in groups.items()}
    out = torch.empty(samples, len(lengths_np), dtype=torch.long)
    for i, (n, k) in enumerate(keys):
        group = pools[(n, k)]
        pool = group[group != i]  # in task order, as before: the same seeded draws
        if not len(pool):
            answer = f", {k} of them its answer's" if k else ""
            raise TaskError(
                f"intervention=resample: prompt {i} ({n} tokens{answer}) has no other prompt "
                "of the same length to take activations from; give several prompts of each "
                "length"
            )
        pick = torch.randint(len(pool), (samples,), generator=gen)
        out[:, i] = torch.from_numpy(pool[pick.numpy()])
    return out


class Resample(Intervention):
    KIND = "resample"
    SPEC = ResampleSpec

    def prepare(self, ctx: Context) -> None:
        spec = self.spec
        assert isinstance(spec, ResampleSpec)
        self.donors = donors(torch.from_numpy(ctx.task.lengths), spec.samples, spec.seed,
                             ctx.task.forced)  # fmt: skip
        self.task, self.hooks, self.run = ctx.task, ctx.hooks, ctx.run

    def prepare_block(self, block: BlockRuns) -> None:
        """Donors come from the whole task: run the block's donors (clean, at the grid's
        hooks), padded to the block's width (a donor has its recipient's length)."""
        picks = self.donors[:, block.prompts]  # [samples, prompt] task indices
        needed, where = np.unique(picks.numpy(), return_inverse=True)
        clean, _ = self.task.rows(needed, width=block.seq_len)
        lengths = torch.from_numpy(self.task.lengths[needed])
        block.extras["donors"] = (torch.from_numpy(where.reshape(picks.shape)),
                                  self.run(clean, lengths, self.hooks))  # fmt: skip

    def sources(self, c: Component, layer: int, block: BlockRuns) -> list[torch.Tensor]:
        where, acts = block.extras["donors"]
        act = acts[c.hook_name(layer)]
        return [act[row.to(act.device)] for row in where]
