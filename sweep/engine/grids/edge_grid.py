"""``grid=edges``: every edge from a sender (the embedding, a head, an MLP) to a receiver
(a head's q, k or v input, an MLP, the logits) patched exactly on the family's suffix
forward (``sweep.engine.edges``), or estimated by EAP and EAP-IG (``sweep.engine.eap``)
and its top edges verified exactly."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sweep.edges.graph import Node, senders
from sweep.engine.eap import EMBED_HOOK, block_metric, edge_scores, integrated_gradients
from sweep.engine.edges import Deltas, deltas, edge_values
from sweep.engine.grids.base import Grid, edge_forward, named_positions, sender_grid, sender_sources
from sweep.interventions.eap import EAP
from sweep.plan import ExactJob, WorkUnit, edge_axes, resolve_positions
from sweep.spec import EdgeGridSpec

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns
    from sweep.engine.worker import Worker


class EdgeGrid(Grid):
    NAME = "grid=edges"

    def __init__(self, w: Worker) -> None:
        super().__init__(w)
        self.forward = edge_forward(w.model, self.NAME)
        w.shape = replace(w.shape, parallel=self.forward.PARALLEL)
        assert isinstance(w.spec.grid, EdgeGridSpec)
        self.axes = edge_axes(w.spec.grid, w.shape, w.task.seq_len, w.task.position_names)
        # What an ablation's sources replace; EAP-IG also moves the input (the embedding).
        embed = senders(w.shape.graph)[:1] if w.spec.intervention.kind == "eap" else []
        self.hooks = sender_grid([*self.senders, *embed])

    @property
    def receivers(self) -> list[Node]:
        nodes = self.axes.nodes("receiver")
        return [nodes[i] for i in self.axes.coords["receiver"]]

    @property
    def senders(self) -> list[Node]:
        nodes = self.axes.nodes("sender")
        return [nodes[i] for i in self.axes.coords["sender"]]

    def check_layer(self) -> int:
        return min(self.axes.layers or (min(r.layer for r in self.receivers),))

    def build(self, prompts: np.ndarray) -> BlockRuns:
        """The base run where forwards start (each receiver layer on) and every chosen
        sender's change, source minus base, per sample of the intervention (the other
        run's output when patching; zero, the task's mean or other prompts' outputs when
        ablating); the sender outputs themselves are not kept."""
        w, iv = self.w, self.w.intervention
        layers = tuple(sorted({r.layer for r in self.receivers} - {w.shape.n_layers}))
        start = self.fw.base_hooks(layers or (w.shape.n_layers - 1,))
        block, samples = sender_sources(w, prompts, start)
        with torch.inference_mode():
            block.extras["deltas"] = [deltas(self.fw, block, self.senders, src)
                                      for src in samples]  # fmt: skip
        if isinstance(iv, EAP):  # every receiver's gradient, from the inputs' path
            # The source input: the other run's embedding, or the embedding's ablation.
            base, source = block.base[EMBED_HOOK], samples[0][EMBED_HOOK]
            metric = block_metric(block, w.metrics)
            block.extras["eap"] = integrated_gradients(
                self.fw, block, base, source, metric, iv.steps, len(w.metrics)
            )
        final = f"blocks.{w.shape.n_layers - 1}.hook_resid_post"  # the logits receiver's
        block.base = {k: v for k, v in block.base.items() if k in start | {final}}
        block.source = {}
        block.extras.pop("donors", None)  # resampled sources are in the deltas now
        return block

    def values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """[metric, receiver, sender, prompt]: the metric with each edge patched; NaN where
        the receiver does not read the sender."""
        pairs = self.axes.edges_of(unit)
        chosen = [self.axes.nodes("sender")[i].name for i in unit.grid[0][1]]
        used = {s.name for s, _ in pairs}
        per_sample = []  # values are averaged over the intervention's samples
        masks = self._position_masks(unit, block)
        for sample in block.extras["deltas"]:
            if "eap" in block.extras:
                per_pos = self._estimated(pairs, block, sample, masks)
            else:
                delta = {k: v for k, v in sample.items() if k in used}
                per_pos = [self._patched(pairs, block, delta, mask) for mask in masks]
            per_sample.append(torch.stack(per_pos, dim=2))
        values = torch.stack(per_sample).mean(0).cpu().numpy().astype(np.float32)
        receivers = [self.axes.nodes("receiver")[i].name for i in unit.layers]
        out = np.full((len(self.w.metrics), len(receivers), len(chosen), len(per_pos), block.n),
                      np.nan, dtype=np.float32)  # fmt: skip
        at_r = [receivers.index(r.name) for _, r in pairs]
        at_s = [chosen.index(s.name) for s, _ in pairs]
        out[:, at_r, at_s] = values  # [metric, edge, pos, prompt]
        return out if len(unit.grid) > 1 else out[:, :, :, 0]

    def exact(self, job: ExactJob, block: BlockRuns) -> torch.Tensor:
        """EAP's verification: [metric, edge, prompt] of each edge patched exactly (cells
        are receiver and sender node indices, and a position code for edges one position
        at a time)."""
        into, out_of = self.axes.nodes("receiver"), self.axes.nodes("sender")
        pairs = [(out_of[int(c[1])], into[int(c[0])]) for c in job.cells]
        delta = block.extras["deltas"][0]  # EAP patches from the other run: one sample
        if all(len(c) == 2 for c in job.cells):
            return self._patched(pairs, block, delta, None)
        out = []
        for pair, c in zip(pairs, job.cells, strict=True):
            at = resolve_positions(np.array([int(c[2])]), block.lengths.cpu().numpy(),
                                   named_positions(block))  # fmt: skip
            mask = torch.arange(block.seq_len)[None, :] == torch.from_numpy(at)[:, 0, None]
            out.append(self._patched([pair], block, delta, mask.to(block.last.device)))
        return torch.cat(out, dim=1)

    def _patched(self, pairs: list, block: BlockRuns, delta: dict, mask: Any) -> torch.Tensor:
        """[metric, edge, prompt] with each sender's change kept where ``mask`` [prompt,
        pos] is true (None: everywhere); NaN for a prompt the mask leaves empty."""
        if mask is not None:
            delta = {k: v * mask[..., None].to(v.dtype) for k, v in delta.items()}
        values = edge_values(self.fw, block, pairs, self.w.metrics,
                             self.w.cells_per_forward(block), delta)  # fmt: skip
        if mask is not None:
            values[:, :, ~mask.any(-1)] = float("nan")
        return values

    def _estimated(
        self, pairs: list, block: BlockRuns, delta: Deltas, masks: list[Any]
    ) -> list[torch.Tensor]:
        """EAP: per position mask, [metric, edge, prompt] the base run's metric plus each
        edge's first-order change (over the mask's positions; NaN where it is empty)."""
        scores = edge_scores(block.extras["eap"], delta, pairs, block.read_pos)  # [m, e, p, pos]
        base = block.evaluate(self.w.metrics, block.base_logits).float()[:, None, :]
        out = []
        for mask in masks:
            if mask is None:
                out.append(base + scores.sum(-1))
                continue
            values = base + (scores * mask[None, None].to(scores.dtype)).sum(-1)
            values[:, :, ~mask.any(-1)] = float("nan")
            out.append(values)
        return out

    def _position_masks(self, unit: WorkUnit, block: BlockRuns) -> list[Any]:
        """Per position of the unit (edges one position at a time): [prompt, pos] true at
        the token the position code means in each prompt; [None] for every position at
        once."""
        if len(unit.grid) == 1:
            return [None]
        codes = np.array(unit.grid[1][1])
        index = torch.from_numpy(
            resolve_positions(codes, block.lengths.cpu().numpy(), named_positions(block))
        )
        seq = torch.arange(block.seq_len)
        return [(seq[None, :] == index[:, j, None]).to(block.last.device)
                for j in range(len(codes))]  # fmt: skip
