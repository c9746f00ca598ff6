"""The worker: owns the model, the task and the cached runs; executes jobs.

The same class runs in-process (``runners.local``) and inside a Ray actor
(``runners.ray``). A job is a work unit (a chunk of the store: component x layer block x
prompt block), an exact patch of single cells (AtP's verification), or a description of
the task. Memory is bounded by ``runner.memory_mb`` whatever the number of prompts: the
cached runs of prompt blocks take at most half of it (as many blocks as fit, least
recently used out) and the batched forwards the rest.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from sweep import __version__
from sweep.components import COMPONENTS, Component
from sweep.edges.circuit import edge_indices, members
from sweep.edges.graph import Node, edges, receivers, senders
from sweep.engine.budget import CACHE_SHARE, cells_per_forward, warn_if_below_one_cell
from sweep.engine.cells import Cell, gather_cells, make_batch
from sweep.engine.circuit import CircuitGraph, circuit_logits
from sweep.engine.eap import EMBED_HOOK, block_metric, edge_scores, integrated_gradients
from sweep.engine.edges import Deltas, deltas, edge_hooks, edge_values, sender_outputs
from sweep.engine.forward import FAMILIES, Forward, HookedForward, choose_forward, fallback
from sweep.engine.forward.suffix import SuffixForward
from sweep.engine.paths import path_hooks, path_values
from sweep.engine.runs import BlockCache, BlockRuns, build_block, run_cached
from sweep.errors import ConfigError
from sweep.interventions import Context, Estimator, build
from sweep.interventions.eap import EAP
from sweep.models import load_model
from sweep.plan import (
    BlockData,
    Describe,
    ExactJob,
    Job,
    ModelShape,
    TaskInfo,
    UnitResult,
    WorkUnit,
    circuit_axes,
    edge_axes,
    make_axes,
    path_axes,
    resolve_positions,
)
from sweep.spec import CircuitGridSpec, EdgeGridSpec, PathGridSpec, SweepSpec
from sweep.tasks import load_examples
from sweep.tasks.tokenize import TokenizedTask, count_tokens, token_strings, tokenize

log = logging.getLogger(__name__)

PROBE = 8
"""Prompts (the longest) of the start-up check, which also measures a block's bytes."""


class Worker:
    def __init__(self, spec: SweepSpec, model: Any = None) -> None:
        """``model``: a TransformerBridge already loaded in this process (a notebook's),
        used as it is instead of loading ``spec.model``."""
        self.spec = spec
        self.metrics = spec.metrics
        self.memory = int(spec.runner.memory_mb * 2**20)
        self.model = load_model(spec.model) if model is None else model.eval()
        self.device = self.model.cfg.device
        self.task: TokenizedTask = tokenize(
            load_examples(spec.task, count_tokens(self.model)), self.model
        )
        self.shape = model_shape(self.model)
        self.edges = isinstance(spec.grid, EdgeGridSpec)
        """An edge sweep: units are blocks of receivers x senders (``sweep.engine.edges``)."""
        self.paths = isinstance(spec.grid, PathGridSpec)
        """A path sweep: units are blocks of sender layers (``sweep.engine.paths``)."""
        self.circuits = isinstance(spec.grid, CircuitGridSpec)
        """A circuit sweep: units are circuit sizes (``sweep.engine.circuit``)."""
        self.circuit_graph: CircuitGraph | None = None
        """Each edge's place in a circuit's masks (made at the first circuit)."""
        self.forward: Forward
        self.grid: tuple[tuple[Component, int], ...] = ()
        if isinstance(spec.grid, EdgeGridSpec):
            self.forward = edge_forward(self.model)
            self.shape = replace(self.shape, parallel=self.forward.PARALLEL)
            self.axes = edge_axes(
                spec.grid, self.shape, self.task.seq_len, self.task.position_names
            )
            # What an ablation's sources replace; EAP-IG also moves the input (the embedding).
            embed = senders(self.shape.graph)[:1] if spec.intervention.kind == "eap" else []
            self.grid = sender_grid([*self._senders, *embed])
        elif isinstance(spec.grid, CircuitGridSpec):
            self.forward = edge_forward(self.model, "grid=circuit")
            self.shape = replace(self.shape, parallel=self.forward.PARALLEL)
            self.axes = circuit_axes(
                spec.grid, self.shape, self.task.seq_len, self.task.position_names
            )
            assert self.axes.ranking is not None
            key = "grid.file" if spec.grid.file is not None else "grid.scores"
            self.ranked = edge_indices(self.axes.ranking, self.shape.graph, key)
            self.grid = sender_grid(senders(self.shape.graph))
        elif isinstance(spec.grid, PathGridSpec):
            self.forward = suffix_forward(self.model, "grid=paths")
            self.axes = path_axes(
                spec.grid, self.shape, self.task.seq_len, self.task.position_names
            )
        else:
            components = tuple(self.shape.component(c.name) for c in spec.grid.component_list)
            check_hooks(components, self.model)
            self.axes = make_axes(
                spec.grid, self.shape, self.task.seq_len, self.task.position_names
            )
            self.grid = tuple((c, layer) for c in components for layer in self.axes.layers)
            self.forward = choose_forward(self.model, spec.runner.engine)
        self.intervention = build(spec.intervention)
        self.intervention.prepare(
            Context(self.model, self.task, self.grid, self._activations, self.metrics, PROBE)
        )
        self.cache = BlockCache(self._build, int(CACHE_SHARE * self.memory))
        probe = self._probe()
        forward = self.forward
        self._check_forward(probe)
        # The probe's prompts are a block's when they are the first ones (a task of PROBE
        # prompts or fewer): kept, that block is not built twice (EAP's gradients with it).
        if self.forward is forward and np.array_equal(probe.prompts, np.arange(probe.n)):
            self.cache.adopt(0, probe.n, probe)
        self.block_bytes = probe.nbytes / probe.n
        """Bytes one prompt of a block takes (the longest prompts: an upper bound)."""
        row = self.forward.row_bytes(self.task.seq_len)
        warn_if_below_one_cell(spec.runner.memory_mb * (1 - CACHE_SHARE), row, 1)

    # ------------------------------------------------------------------ cached runs

    def _activations(
        self, tokens: torch.Tensor, lengths: torch.Tensor, hooks: frozenset[str]
    ) -> dict[str, Any]:
        return run_cached(self.model, tokens.to(self.device), lengths.to(self.device), hooks)[1]

    def _build_prompts(self, prompts: np.ndarray) -> BlockRuns:
        if self.edges:
            return self._build_edges(prompts)
        if self.circuits:
            return self._build_circuit(prompts)
        if self.paths:
            first = min(self.axes.layers)
            base = self.forward.base_hooks(tuple(range(first, self.shape.n_layers)))
            base |= path_hooks(self.shape.n_layers, first)
            senders = {f"blocks.{i}.attn.hook_z" for i in self.axes.layers}
            run = self.intervention.base_run
            return build_block(self.model, self.task, prompts, run, base, senders)
        grid_hooks = {c.hook_name(layer) for c, layer in self.grid}
        base = self.forward.base_hooks(self.axes.layers)
        reads_base = self.intervention.reads() == "base"
        block = build_block(
            self.model,
            self.task,
            prompts,
            self.intervention.base_run,
            base | grid_hooks if reads_base else base,
            set() if reads_base else grid_hooks,
        )
        self.intervention.prepare_block(block)
        return block

    def _build_edges(self, prompts: np.ndarray) -> BlockRuns:
        """An edge sweep's cached runs: the base run where forwards start (each receiver
        layer on) and every chosen sender's change, source minus base, per sample of the
        intervention (the other run's output when patching; zero, the task's mean or other
        prompts' outputs when ablating); the sender outputs themselves are not kept."""
        iv = self.intervention
        layers = tuple(sorted({r.layer for r in self._receivers} - {self.shape.n_layers}))
        start = self.forward.base_hooks(layers or (self.shape.n_layers - 1,))
        block, samples = self._sender_sources(prompts, start)
        assert isinstance(self.forward, SuffixForward)
        with torch.inference_mode():
            block.extras["deltas"] = [deltas(self.forward, block, self._senders, src)
                                      for src in samples]  # fmt: skip
        if isinstance(iv, EAP):  # every receiver's gradient, from the inputs' path
            # The source input: the other run's embedding, or the embedding's ablation.
            base, source = block.base[EMBED_HOOK], samples[0][EMBED_HOOK]
            metric = block_metric(block, self.metrics)
            block.extras["eap"] = integrated_gradients(
                self.forward, block, base, source, metric, iv.steps, len(self.metrics)
            )
        final = f"blocks.{self.shape.n_layers - 1}.hook_resid_post"  # the logits receiver's
        block.base = {k: v for k, v in block.base.items() if k in start | {final}}
        block.source = {}
        block.extras.pop("donors", None)  # resampled sources are in the deltas now
        return block

    def _sender_sources(
        self, prompts: np.ndarray, start: set[str]
    ) -> tuple[BlockRuns, list[dict[str, torch.Tensor]]]:
        """The block's runs with the base run's ``start`` hooks and, per sample of the
        intervention, the activations every sender's source output is made of (the other
        run's when patching; zero, the task's mean or other prompts' when ablating)."""
        iv = self.intervention
        outputs = edge_hooks(self.shape.n_layers, self.shape.mlp)
        other = outputs if iv.reads() == "other" else set()
        block = build_block(self.model, self.task, prompts, iv.base_run, start | outputs, other)
        iv.prepare_block(block)
        with torch.inference_mode():
            per_hook = [(c.hook_name(layer), iv.sources(c, layer, block)) for c, layer in self.grid]
            samples = [{hook: src[k] for hook, src in per_hook} for k in range(len(per_hook[0][1]))]
        return block, samples

    def _build_circuit(self, prompts: np.ndarray) -> BlockRuns:
        """A circuit sweep's cached runs: the base (clean) run's embedding, where each
        circuit's forward starts, and every sender's ablated output per sample of the
        intervention (the corrupted run's, or zero, the mean, other prompts')."""
        start = self.forward.base_hooks((0,))
        block, samples = self._sender_sources(prompts, start)
        assert isinstance(self.forward, SuffixForward)
        with torch.inference_mode():
            block.extras["ablated"] = [
                {s.name: sender_outputs(self.forward, src, s) for s in senders(self.shape.graph)}
                for src in samples
            ]
        block.base = {k: v for k, v in block.base.items() if k in start}
        block.source = {}
        block.extras.pop("donors", None)  # resampled outputs are in "ablated" now
        return block

    def _circuit_values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """[metric, size, prompt] of a circuit unit: the metric with every edge outside
        the top ``size`` of the ranking (less those that dangle, when pruning) ablated,
        averaged over the ablation's samples."""
        assert isinstance(self.forward, SuffixForward) and self.axes.ranking is not None
        if self.circuit_graph is None:
            self.circuit_graph = CircuitGraph.of(self.forward, edges(self.shape.graph))
        graph, embed = self.circuit_graph, block.base[EMBED_HOOK]
        out = []
        with torch.inference_mode():
            for size in unit.layers:
                keep = np.full(len(graph.edges), size >= len(graph.edges))  # the full model
                if size < len(graph.edges):
                    kept = members(self.axes.ranking, size, self.shape.graph, self.axes.prune)
                    keep[[self.ranked[i] for i in kept]] = True
                per_sample = [
                    block.evaluate(
                        self.metrics,
                        circuit_logits(self.forward, embed, block.last, graph, keep, ablated),
                    )  # fmt: skip
                    for ablated in block.extras["ablated"]
                ]
                out.append(torch.stack(per_sample).float().mean(0))
        return torch.stack(out, dim=1).cpu().numpy().astype(np.float32)

    @property
    def _receivers(self) -> list[Node]:
        nodes = self.axes.nodes("receiver")
        return [nodes[i] for i in self.axes.coords["receiver"]]

    @property
    def _senders(self) -> list[Node]:
        nodes = self.axes.nodes("sender")
        return [nodes[i] for i in self.axes.coords["sender"]]

    def _build(self, start: int, stop: int) -> BlockRuns:
        return self._build_prompts(np.arange(start, stop))

    def _probe(self) -> BlockRuns:
        """The longest prompts, as a block: the start-up check runs on them, and they
        measure what a block costs per prompt."""
        longest = np.argsort(-self.task.lengths, kind="stable")[:PROBE]
        return self._build_prompts(np.sort(longest))

    def block(self, start: int, stop: int) -> BlockRuns:
        return self.cache.get(start, stop)

    def _check_forward(self, block: BlockRuns) -> None:
        if self.circuits:
            layers: tuple[int, ...] = (0,)  # a circuit's forward starts at the embedding
        else:
            layers = self.axes.layers or (min(r.layer for r in self._receivers),)
        why = self.forward.check(block, min(min(layers), self.shape.n_layers - 1))
        if why is not None and (self.edges or self.circuits):
            grid = "grid=circuit" if self.circuits else "grid=edges"
            raise ConfigError(f"{grid}: the fast forward does not reproduce this model: {why}")
        if why is not None:
            self.forward = fallback(self.spec.runner.engine, why, HookedForward(self.model))

    # ------------------------------------------------------------------ jobs

    def describe(self) -> TaskInfo:
        return TaskInfo(
            shape=self.shape,
            lengths=tuple(int(x) for x in self.task.lengths),
            versions={"patchsweep": __version__, "transformer_lens": version("transformer-lens")},
            engine=self.forward.NAME,
            block_bytes=int(self.block_bytes),
            row_bytes=self.forward.row_bytes(self.task.seq_len),
            position_names=self.task.position_names,
        )

    def execute(self, job: Job) -> Any:
        if isinstance(job, Describe):
            return self.describe()
        if isinstance(job, ExactJob):
            return self.exact(job)
        return self.run(job)

    def stats(self) -> dict[str, int]:
        return {"cache_builds": self.cache.builds}

    def run(self, unit: WorkUnit) -> UnitResult:
        """Values of one unit: [metric, layer, *dims, prompt], float32, and its block's data."""
        block = self.block(unit.prompt_start, unit.prompt_stop)
        if self.edges:
            return UnitResult(self._edge_values(unit, block), self._data(block))
        if self.paths:
            return UnitResult(self._path_values(unit, block), self._data(block))
        if self.circuits:
            return UnitResult(self._circuit_values(unit, block), self._data(block))
        c = self.shape.component(unit.component)
        cells = unit.cells
        per_layer = [self._values(c, layer, cells, block) for layer in unit.layers]
        out = torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
        grid = [len(v) for _, v in unit.grid]
        values = out.reshape(out.shape[0], len(unit.layers), *grid, block.n)
        return UnitResult(values, self._data(block))

    def _edge_values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """[metric, receiver, sender, prompt] of an edge unit: the metric with each edge
        patched; NaN where the receiver does not read the sender."""
        pairs = self.axes.edges_of(unit)
        senders = self.axes.nodes("sender")
        chosen = [senders[i].name for i in unit.grid[0][1]]
        assert isinstance(self.forward, SuffixForward)
        used = {s.name for s, _ in pairs}
        per_sample = []  # values are averaged over the intervention's samples
        masks = self._position_masks(unit, block)
        for sample in block.extras["deltas"]:
            if "eap" in block.extras:
                per_pos = self._estimated_edges(pairs, block, sample, masks)
            else:
                delta = {k: v for k, v in sample.items() if k in used}
                per_pos = [self._edges_at(pairs, block, delta, mask) for mask in masks]
            per_sample.append(torch.stack(per_pos, dim=2))
        values = torch.stack(per_sample).mean(0).cpu().numpy().astype(np.float32)
        receivers = [self.axes.nodes("receiver")[i].name for i in unit.layers]
        out = np.full((len(self.metrics), len(receivers), len(chosen), len(per_pos), block.n),
                      np.nan, dtype=np.float32)  # fmt: skip
        at_r = [receivers.index(r.name) for _, r in pairs]
        at_s = [chosen.index(s.name) for s, _ in pairs]
        out[:, at_r, at_s] = values  # [metric, edge, pos, prompt]
        return out if len(unit.grid) > 1 else out[:, :, :, 0]

    def _edges_at(self, pairs: list, block: BlockRuns, delta: dict, mask: Any) -> torch.Tensor:
        """[metric, edge, prompt] with each sender's change kept where ``mask`` [prompt,
        pos] is true (None: everywhere); NaN for a prompt the mask leaves empty."""
        assert isinstance(self.forward, SuffixForward)
        if mask is not None:
            delta = {k: v * mask[..., None].to(v.dtype) for k, v in delta.items()}
        values = edge_values(self.forward, block, pairs, self.metrics,
                             self.cells_per_forward(block), delta)  # fmt: skip
        if mask is not None:
            values[:, :, ~mask.any(-1)] = float("nan")
        return values

    def _estimated_edges(
        self, pairs: list, block: BlockRuns, delta: Deltas, masks: list[Any]
    ) -> list[torch.Tensor]:
        """EAP: per position mask, [metric, edge, prompt] the base run's metric plus each
        edge's first-order change (over the mask's positions; NaN where it is empty)."""
        scores = edge_scores(block.extras["eap"], delta, pairs, block.last)  # [m, e, p, pos]
        base = block.evaluate(self.metrics, block.base_logits).float()[:, None, :]
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
        named = block.named.cpu().numpy() if block.named is not None else np.zeros((block.n, 0))
        index = torch.from_numpy(resolve_positions(codes, block.lengths.cpu().numpy(), named))
        seq = torch.arange(block.seq_len)
        return [(seq[None, :] == index[:, j, None]).to(block.last.device)
                for j in range(len(codes))]  # fmt: skip

    def _path_values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """[metric, layer, head, prompt] of a path unit: the metric with each sender head
        path-patched into the sweep's receivers; one position at a time, [metric, layer,
        pos, head, prompt]."""
        assert isinstance(self.forward, SuffixForward)
        by_name = {r.name: r for r in receivers(self.shape.graph)}
        into = [by_name[n] for n in self.axes.receivers]
        grid = dict(unit.grid)
        heads, k = grid["head"], self.cells_per_forward(block)
        if "pos" not in grid:
            per_layer = [
                path_values(self.forward, block, into, layer, heads, self.metrics, k)
                for layer in unit.layers
            ]
            return torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
        named = block.named.cpu().numpy() if block.named is not None else np.zeros((block.n, 0))
        index = resolve_positions(np.array(grid["pos"]), block.lengths.cpu().numpy(), named)
        at = torch.from_numpy(index).to(block.last.device)  # [prompt, pos] token, -1: none
        per_layer = [
            torch.stack([path_values(self.forward, block, into, layer, heads, self.metrics, k,
                                     at[:, j]) for j in range(at.shape[1])], dim=1)
            for layer in unit.layers
        ]  # fmt: skip
        return torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)

    def _data(self, block: BlockRuns) -> BlockData:
        if "data" not in block.extras:
            tokens = (block.clean_tokens, block.corrupted_tokens)
            clean_str, corrupted_str = (token_strings(self.model, t, block.lengths) for t in tokens)
            examples = [self.task.examples[i] for i in block.prompts]
            block.extras["data"] = BlockData(
                block.start,
                block.evaluate(self.metrics, block.clean_logits).cpu().numpy(),
                block.evaluate(self.metrics, block.corrupted_logits).cpu().numpy(),
                clean_str,
                corrupted_str,
                texts={
                    "clean_text": [e.clean for e in examples],
                    "corrupted_text": [e.corrupted for e in examples],
                    "answer": [e.answer for e in examples],
                    "wrong": [e.wrong for e in examples],
                    "source": [e.source for e in examples],
                },
                ids={
                    "answer_id": block.answer.cpu().numpy(),
                    "wrong_id": block.wrong.cpu().numpy(),
                    "template": np.array([e.template for e in examples], dtype=np.int64),
                },
                named=self.task.named[block.prompts],
            )
        return block.extras["data"]

    @torch.inference_mode()
    def exact(self, job: ExactJob) -> np.ndarray:
        """Exact patching of single cells under the sweep's intervention (AtP: patching in
        its direction): [metric, cell, prompt]."""
        block = self.block(job.prompt_start, job.prompt_stop)
        if self.edges:
            return self._exact_edges(job, block).cpu().numpy().astype(np.float32)
        c = self.shape.component(job.component)
        values = self.patched(c, job.layer, list(job.cells), block)
        return values.cpu().numpy().astype(np.float32)

    def _exact_edges(self, job: ExactJob, block: BlockRuns) -> torch.Tensor:
        """EAP's verification: [metric, edge, prompt] of each edge patched exactly (cells
        are receiver and sender node indices, and a position code for edges one position
        at a time)."""
        into, out_of = self.axes.nodes("receiver"), self.axes.nodes("sender")
        pairs = [(out_of[int(c[1])], into[int(c[0])]) for c in job.cells]
        delta = block.extras["deltas"][0]  # EAP patches from the other run: one sample
        if all(len(c) == 2 for c in job.cells):
            return self._edges_at(pairs, block, delta, None)
        named = block.named.cpu().numpy() if block.named is not None else np.zeros((block.n, 0))
        out = []
        for pair, c in zip(pairs, job.cells, strict=True):
            at = resolve_positions(np.array([int(c[2])]), block.lengths.cpu().numpy(), named)
            mask = torch.arange(block.seq_len)[None, :] == torch.from_numpy(at)[:, 0, None]
            out.append(self._edges_at([pair], block, delta, mask.to(block.last.device)))
        return torch.cat(out, dim=1)

    def _values(self, c: Component, layer: int, cells: list[Cell], block: BlockRuns) -> Any:
        iv = self.intervention
        if isinstance(iv, Estimator):
            delta = iv.estimate(c, layer, block)  # [metric, prompt, *dims]
            base = block.evaluate(self.metrics, block.base_logits)  # [metric, prompt]
            return base[:, None, :] + gather_cells(
                c, delta, make_batch(c, cells, block.lengths, block.named)
            )
        return self.patched(c, layer, cells, block)

    def cells_per_forward(self, block: BlockRuns) -> int:
        """As many cells as fit the share of ``runner.memory_mb`` the cached runs never
        take. Not what they leave now: that depends on which blocks happen to be cached,
        and a different batch gives float results that differ in the last bit, so a
        resumed unit would not equal the same unit of an uninterrupted sweep."""
        free = self.memory * (1 - CACHE_SHARE) / 2**20
        return cells_per_forward(free, self.forward.row_bytes(block.seq_len), block.n)

    @torch.inference_mode()
    def patched(
        self, c: Component, layer: int, cells: list[Cell], block: BlockRuns
    ) -> torch.Tensor:
        """[metric, cell, prompt] of one layer's cells, averaged over the source samples;
        NaN where a cell does not exist for a prompt."""
        k = self.cells_per_forward(block)
        per_sample = []
        for src in self.intervention.sources(c, layer, block):
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
        batch = make_batch(c, cells, block.lengths, block.named)
        logits = self.forward.logits(c, layer, batch, src, block)
        values = block.evaluate(self.metrics, logits).masked_fill(~batch.valid, float("nan"))
        return values.reshape(len(self.metrics), len(cells), block.n)


def suffix_forward(model: Any, grid: str) -> SuffixForward:
    """The model family's suffix forward, which edge and path patching run on; a model
    without one is refused (the hooked forward cannot patch edges or paths)."""
    reasons = []
    for cls in FAMILIES:
        why = cls.unsupported(model)
        if why is None:
            forward = cls(model)
            assert isinstance(forward, SuffixForward)
            return forward
        reasons.append(why)
    raise ConfigError(
        f"{grid}: needs the fast forward of the model's family (GPT-2, Llama, Mistral, Qwen2, "
        f"Gemma 2, GPT-NeoX, GPT-J), and this model has none: {'; '.join(reasons)}"
    )


def sender_grid(senders: list[Node]) -> tuple[tuple[Component, int], ...]:
    """The hooks whose activations make the senders' outputs, as (component, layer) pairs:
    an intervention prepares its sources for these (means, donors) as for a node grid."""
    pairs = set()
    for s in senders:
        if s.kind == "embed":
            pairs.add(("resid_pre", 0))
        else:
            pairs.add(("z" if s.kind == "head" else "mlp_out", s.layer))
    return tuple((COMPONENTS[name], layer) for name, layer in sorted(pairs))


def edge_forward(model: Any, grid: str = "grid=edges") -> SuffixForward:
    """The forward edge sweeps patch on (``sweep.engine.edges``): a family's suffix
    forward whose heads each write a share of the residual stream of their own."""
    forward = suffix_forward(model, grid)
    why = forward.edges_unsupported()
    if why is not None:
        raise ConfigError(f"{grid}: {why}; edge and circuit sweeps cannot run on this model")
    return forward


def model_shape(model: Any) -> ModelShape:
    cfg = model.cfg
    return ModelShape(
        int(cfg.n_layers),
        int(cfg.n_heads),
        int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        mlp=not bool(getattr(cfg, "attn_only", False)),
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        d_model=int(cfg.d_model),
    )


def check_hooks(components: tuple[Component, ...], model: Any) -> None:
    """Components the model has no hook for (e.g. mlp_out of an attention-only model)."""
    missing = [c.name for c in components if c.hook_name(0) not in model.hook_dict]
    if missing:
        raise ConfigError(
            f"grid.components: {missing} do not exist in this model "
            f"(attention-only: {bool(getattr(model.cfg, 'attn_only', False))}); remove them"
        )
