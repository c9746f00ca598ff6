"""``grid=circuit``: the clean prompts with every edge outside a circuit ablated, per
circuit size: the top edges of a ranking (``sweep.edges.ranking``), run by the forward
with cut edges (``sweep.engine.circuit_forward``)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from sweep.edges.graph import edges, senders
from sweep.edges.ranking import edge_indices, members
from sweep.engine.circuit_forward import CircuitGraph, circuit_logits
from sweep.engine.eap import EMBED_HOOK
from sweep.engine.edges import sender_outputs
from sweep.engine.grids.base import Grid, edge_forward, sender_grid, sender_sources
from sweep.plan import WorkUnit, circuit_axes
from sweep.spec import CircuitGridSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns
    from sweep.engine.worker import Worker


class CircuitGrid(Grid):
    NAME = "grid=circuit"

    def __init__(self, w: Worker) -> None:
        super().__init__(w)
        self.forward = edge_forward(w.model, self.NAME)
        w.shape = replace(w.shape, parallel=self.forward.PARALLEL)
        grid = w.spec.grid
        assert isinstance(grid, CircuitGridSpec)
        self.axes = circuit_axes(grid, w.shape, w.task.seq_len, w.task.position_names)
        assert self.axes.ranking is not None
        key = "grid.file" if grid.file is not None else "grid.scores"
        self.ranked = edge_indices(self.axes.ranking, w.shape.graph, key)
        """Each ranked edge's index in the graph's edges."""
        self.hooks = sender_grid(senders(w.shape.graph))
        self.graph: CircuitGraph | None = None
        """Each edge's place in a circuit's masks (made at the first circuit)."""

    def check_layer(self) -> int:
        return 0  # a circuit's forward starts at the embedding

    def build(self, prompts: np.ndarray) -> BlockRuns:
        """The base (clean) run's embedding, where each circuit's forward starts, and every
        sender's ablated output per sample of the intervention (the corrupted run's, or
        zero, the mean, other prompts')."""
        start = self.fw.base_hooks((0,))
        block, samples = sender_sources(self.w, prompts, start)
        with torch.inference_mode():
            block.extras["ablated"] = [
                {s.name: sender_outputs(self.fw, src, s) for s in senders(self.w.shape.graph)}
                for src in samples
            ]
        block.base = {k: v for k, v in block.base.items() if k in start}
        block.source = {}
        block.extras.pop("donors", None)  # resampled outputs are in "ablated" now
        return block

    def values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """[metric, size, prompt]: the metric with every edge outside the top ``size`` of
        the ranking (less those that dangle, when pruning) ablated, averaged over the
        ablation's samples."""
        assert self.axes.ranking is not None
        if self.graph is None:
            self.graph = CircuitGraph.of(self.fw, edges(self.w.shape.graph))
        graph, embed, shape = self.graph, block.base[EMBED_HOOK], self.w.shape.graph
        out = []
        with torch.inference_mode():
            for size in unit.layers:
                keep = np.full(len(graph.edges), size >= len(graph.edges))  # the full model
                if size < len(graph.edges):
                    kept = members(self.axes.ranking, size, shape, self.axes.prune)
                    keep[[self.ranked[i] for i in kept]] = True
                per_sample = [
                    block.evaluate(
                        self.w.metrics,
                        circuit_logits(
                            self.fw, embed, block.last, graph, keep, ablated, block.reads
                        ),
                    )  # fmt: skip
                    for ablated in block.extras["ablated"]
                ]
                out.append(torch.stack(per_sample).float().mean(0))
        return torch.stack(out, dim=1).cpu().numpy().astype(np.float32)
