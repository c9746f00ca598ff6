"""``grid=nodes`` (the default): components x layers x positions and heads, each cell
patched or ablated in batched forwards (``sweep.engine.cells``), or estimated (AtP), on
the fastest forward that reproduces the model, else the hooked one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sweep.components import Component
from sweep.engine.cells import Cell, gather_cells, make_batch
from sweep.engine.forward import choose_forward
from sweep.engine.grids.base import Grid
from sweep.engine.runs import build_block
from sweep.errors import ConfigError
from sweep.interventions.base import Estimator
from sweep.models.sae import attached
from sweep.plan import ExactJob, WorkUnit, make_axes
from sweep.spec import GridSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns
    from sweep.engine.worker import Worker


class NodeGrid(Grid):
    NAME = "grid=nodes"
    STRICT = False

    def __init__(self, w: Worker) -> None:
        super().__init__(w)
        grid = w.spec.grid
        assert isinstance(grid, GridSpec)
        components = tuple(w.shape.component(c.name) for c in grid.component_list)
        check_hooks(components, w.model)
        self.axes = make_axes(grid, w.shape, w.task.seq_len, w.task.position_names)
        self.hooks = tuple((c, layer) for c in components for layer in self.axes.layers)
        self.forward = choose_forward(w.model, w.spec.runner.engine)
        self.held: tuple[int, ...] | None = None
        """The SAE latents the cached runs hold (``Sae.keep``); None: all of them."""
        if any(c.latents for c in components) and grid.latents != "all":
            self.held = self.axes.coords["latent"]
            for sae in attached(w.model).values():
                sae.keep(self.held)

    def latent_width(self) -> int:
        if not any(c.latents for c, _ in self.hooks):
            return 0
        return self.w.shape.n_latents if self.held is None else len(self.held)

    def before(self, job: WorkUnit | ExactJob) -> None:
        """A unit asking for latents the cached runs do not hold (a resumed store's, which
        ``top:N`` picked on another machine) has them added."""
        c = self.w.shape.component(job.component)
        if self.held is None or not c.latents:
            return
        asked = {cell[c.dims.index("latent")] for cell in _cells_of(job)}
        if not asked <= set(self.held):
            self.held = tuple(sorted(set(self.held) | asked))
            self.w.hold_latents(self.held)

    def _columns(self, c: Component, cells: list[Cell]) -> list[Cell]:
        """Cells with each latent id replaced by its column in the cached runs."""
        if self.held is None or not c.latents:
            return cells
        i, column = c.dims.index("latent"), {x: k for k, x in enumerate(self.held)}
        return [(*cell[:i], column[cell[i]], *cell[i + 1 :]) for cell in cells]

    def check_layer(self) -> int:
        return min(self.axes.layers)

    def build(self, prompts: np.ndarray) -> BlockRuns:
        w, iv = self.w, self.w.intervention
        grid_hooks = {c.hook_name(layer) for c, layer in self.hooks}
        base = self.fw.base_hooks(self.axes.layers)
        base |= {c.hook_name(layer) for c, layer in self.hooks if c.latents}  # what a patch changes
        reads_base = iv.reads() == "base"
        block = build_block(
            w.model,
            w.task,
            prompts,
            iv.base_run,
            base | grid_hooks if reads_base else base,
            set() if reads_base else grid_hooks,
        )
        iv.prepare_block(block)
        return block

    def values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        c = self.w.shape.component(unit.component)
        cells = self._columns(c, unit.cells)
        per_layer = [self._values(c, layer, cells, block) for layer in unit.layers]
        out = torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
        grid = [len(v) for _, v in unit.grid]
        return out.reshape(out.shape[0], len(unit.layers), *grid, block.n)

    def exact(self, job: ExactJob, block: BlockRuns) -> torch.Tensor:
        """AtP's verification: the cells patched in its direction."""
        c = self.w.shape.component(job.component)
        return self.patched(c, job.layer, self._columns(c, list(job.cells)), block)

    def _values(self, c: Component, layer: int, cells: list[Cell], block: BlockRuns) -> Any:
        iv = self.w.intervention
        if isinstance(iv, Estimator):
            delta = iv.estimate(c, layer, block)  # [metric, prompt, *dims]
            base = block.evaluate(self.w.metrics, block.base_logits)  # [metric, prompt]
            return base[:, None, :] + gather_cells(
                c, delta, make_batch(c, cells, block.lengths, block.named)
            )
        return self.patched(c, layer, cells, block)

    @torch.inference_mode()
    def patched(
        self, c: Component, layer: int, cells: list[Cell], block: BlockRuns
    ) -> torch.Tensor:
        """[metric, cell, prompt] of one layer's cells, averaged over the source samples;
        NaN where a cell does not exist for a prompt."""
        k = self.w.cells_per_forward(block)
        per_sample = []
        for src in self.w.intervention.sources(c, layer, block):
            parts = [
                self._forward(c, layer, cells[i : i + k], src, block)
                for i in range(0, len(cells), k)
            ]
            per_sample.append(torch.cat(parts, dim=1))
        return torch.stack(per_sample).mean(0)

    def _forward(
        self, c: Component, layer: int, cells: list[Cell], src: torch.Tensor, block: BlockRuns
    ) -> torch.Tensor:
        """One batched forward over ``len(cells)`` copies of the block: [metric, cell, prompt]."""
        metrics = self.w.metrics
        batch = make_batch(c, cells, block.lengths, block.named)
        logits = self.fw.logits(c, layer, batch, src, block)
        values = block.evaluate(metrics, logits).masked_fill(~batch.valid, float("nan"))
        return values.reshape(len(metrics), len(cells), block.n)


def _cells_of(job: WorkUnit | ExactJob) -> list[Cell]:
    return job.cells if isinstance(job, WorkUnit) else list(job.cells)


def check_hooks(components: tuple[Component, ...], model: Any) -> None:
    """Components the model has no hook for (e.g. mlp_out of an attention-only model)."""
    missing = [c.name for c in components
               if not c.latents and c.hook_name(0) not in model.hook_dict]  # fmt: skip
    if missing:
        raise ConfigError(
            f"grid.components: {missing} do not exist in this model "
            f"(attention-only: {bool(getattr(model.cfg, 'attn_only', False))}); remove them"
        )
