"""``grid=paths``: path patching (Wang et al. 2023), each sender head's path into the
sweep's receivers patched, on the family's suffix forward (``sweep.engine.paths``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sweep.edges.graph import receivers
from sweep.engine.grids.base import Grid, named_positions, suffix_forward
from sweep.engine.paths import path_hooks, path_values
from sweep.engine.runs import build_block
from sweep.plan import WorkUnit, path_axes, resolve_positions
from sweep.spec import PathGridSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns
    from sweep.engine.worker import Worker


class PathGrid(Grid):
    NAME = "grid=paths"

    def __init__(self, w: Worker) -> None:
        super().__init__(w)
        self.forward = suffix_forward(w.model, self.NAME)
        assert isinstance(w.spec.grid, PathGridSpec)
        self.axes = path_axes(w.spec.grid, w.shape, w.task.seq_len, w.task.position_names)

    def check_layer(self) -> int:
        return min(self.axes.layers)

    def build(self, prompts: np.ndarray) -> BlockRuns:
        w = self.w
        first = min(self.axes.layers)
        base = self.fw.base_hooks(tuple(range(first, w.shape.n_layers)))
        base |= path_hooks(w.shape.n_layers, first)
        senders = {f"blocks.{i}.attn.hook_z" for i in self.axes.layers}
        return build_block(w.model, w.task, prompts, w.intervention.base_run, base, senders)

    def values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """[metric, layer, head, prompt]: the metric with each sender head path-patched
        into the sweep's receivers; one position at a time, [metric, layer, pos, head,
        prompt]."""
        w = self.w
        by_name = {r.name: r for r in receivers(w.shape.graph)}
        into = [by_name[n] for n in self.axes.receivers]
        grid = dict(unit.grid)
        heads, k = grid["head"], w.cells_per_forward(block)
        if "pos" not in grid:
            per_layer = [
                path_values(self.fw, block, into, layer, heads, w.metrics, k)
                for layer in unit.layers
            ]
            return torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
        index = resolve_positions(np.array(grid["pos"]), block.lengths.cpu().numpy(),
                                  named_positions(block))  # fmt: skip
        at = torch.from_numpy(index).to(block.last.device)  # [prompt, pos] token, -1: none
        per_layer = [
            torch.stack([path_values(self.fw, block, into, layer, heads, w.metrics, k,
                                     at[:, j]) for j in range(at.shape[1])], dim=1)
            for layer in unit.layers
        ]  # fmt: skip
        return torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
