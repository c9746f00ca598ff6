"""The worker: owns the model, the task and the cached runs; executes jobs.

The same class runs in-process (``runners.local``) and inside a Ray actor
(``runners.ray``). A job is a work unit (a chunk of the store: component x layer block x
prompt block), an exact patch of single cells (AtP's verification), or a description of
the task. What depends on the grid's kind (nodes, edges, paths, circuits: the forward,
the axes, a block's cached runs, a unit's values) is the kind's module in
``sweep.engine.grids``. Memory is bounded by ``runner.memory_mb`` whatever the number of
prompts: the cached runs of prompt blocks take at most half of it (as many blocks as fit,
least recently used out) and the batched forwards the rest.
"""

from __future__ import annotations

import dataclasses
import logging
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from sweep import __version__
from sweep.components import Component
from sweep.engine.budget import CACHE_SHARE, cells_per_forward, warn_if_below_one_cell
from sweep.engine.forward import Forward, HookedForward, fallback
from sweep.engine.grids import GRIDS
from sweep.engine.runs import BlockCache, BlockRuns, run_cached
from sweep.errors import ConfigError
from sweep.interventions import build
from sweep.interventions.base import Context
from sweep.metrics import check_multi_token, evaluate, load_custom
from sweep.models import load_model
from sweep.models.sae import attached
from sweep.plan import (
    BlockData,
    Describe,
    ExactJob,
    Job,
    ModelShape,
    TaskInfo,
    UnitResult,
    WorkUnit,
)
from sweep.spec import SweepSpec
from sweep.tasks import load_examples
from sweep.tasks.base import answer_text
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
        self.model = load_model(spec.model) if model is None else evaluating(model)
        self.device = self.model.cfg.device
        self.task: TokenizedTask = tokenize(
            load_examples(spec.task, count_tokens(self.model)), self.model
        )
        check_multi_token(spec.metrics, self.task.several_tokens())
        if spec.metric.custom:
            check_custom_metrics(self.model, self.task, load_custom(spec.metric.custom))
        self.shape = model_shape(self.model)
        if spec.sae.configs and getattr(spec.grid, "has_latents", False):
            self.shape = with_saes(self.model, self.task, spec, self.shape)
        self.kind = GRIDS[type(spec.grid)](self)
        """The grid kind's part: its forward, axes and hooks, blocks and unit values."""
        self.forward: Forward = self.kind.forward
        self.axes = self.kind.axes
        self.grid: tuple[tuple[Component, int], ...] = self.kind.hooks
        self.probe_n = probe_prompts(self.model, self.task.seq_len, self.kind.latent_width(),
                                     CACHE_SHARE * self.memory)  # fmt: skip
        """Prompts of the start-up check and of an intervention's passes over the task."""
        self.intervention = build(spec.intervention)
        self.intervention.prepare(self._context())
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
        row = self.forward.row_bytes(self.task.seq_len, self.task.reads)
        warn_if_below_one_cell(spec.runner.memory_mb * (1 - CACHE_SHARE), row, 1)

    # ------------------------------------------------------------------ cached runs

    def _activations(
        self, tokens: torch.Tensor, lengths: torch.Tensor, hooks: frozenset[str]
    ) -> dict[str, Any]:
        return run_cached(self.model, tokens.to(self.device), lengths.to(self.device), hooks)[1]

    def _context(self) -> Context:
        return Context(
            self.model, self.task, self.grid, self._activations, self.metrics, self.probe_n
        )

    def hold_latents(self, ids: tuple[int, ...]) -> None:
        """Cache these SAE latents' columns from now on: a resumed store's ``top:N`` may
        name latents this machine did not pick. The cached runs and the intervention's
        sources are made again with them (each column's values are the same whichever
        others are kept)."""
        for sae in attached(self.model).values():
            sae.keep(ids)
        self.cache = BlockCache(self._build, int(CACHE_SHARE * self.memory))
        self.intervention.prepare(self._context())

    def _build(self, start: int, stop: int) -> BlockRuns:
        return self.kind.build(np.arange(start, stop))

    def _probe(self) -> BlockRuns:
        """The longest prompts, as a block: the start-up check runs on them, and they
        measure what a block costs per prompt."""
        longest = np.argsort(-self.task.lengths, kind="stable")[: self.probe_n]
        return self.kind.build(np.sort(longest))

    def block(self, start: int, stop: int) -> BlockRuns:
        return self.cache.get(start, stop)

    def _check_forward(self, block: BlockRuns) -> None:
        layer = min(self.kind.check_layer(), self.shape.n_layers - 1)
        why = self.forward.check(block, layer)
        if why is not None and self.kind.STRICT:
            raise ConfigError(
                f"{self.kind.NAME}: the fast forward does not reproduce this model: {why}"
            )
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
            row_bytes=self.forward.row_bytes(self.task.seq_len, self.task.reads),
            position_names=self.task.position_names,
            answer_widths=(_width(self.task.answer), _width(self.task.wrong)),
            continuations=self.task.continuations,
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
        self.kind.before(unit)
        block = self.block(unit.prompt_start, unit.prompt_stop)
        return UnitResult(self.kind.values(unit, block), self._data(block))

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
                    "answer": [answer_text(e.answer) for e in examples],
                    "wrong": [answer_text(e.wrong) for e in examples],
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
        its direction; EAP: edges): [metric, cell, prompt]."""
        self.kind.before(job)
        block = self.block(job.prompt_start, job.prompt_stop)
        return self.kind.exact(job, block).cpu().numpy().astype(np.float32)

    def cells_per_forward(self, block: BlockRuns) -> int:
        """As many cells as fit the share of ``runner.memory_mb`` the cached runs never
        take. Not what they leave now: that depends on which blocks happen to be cached,
        and a different batch gives float results that differ in the last bit, so a
        resumed unit would not equal the same unit of an uninterrupted sweep."""
        free = self.memory * (1 - CACHE_SHARE) / 2**20
        return cells_per_forward(free, self.forward.row_bytes(block.seq_len, block.reads), block.n)


def _width(ids: torch.Tensor) -> int:
    """Tokens per answer set (0: one answer token per prompt)."""
    return int(ids.shape[1]) if ids.dim() == 2 else 0


def evaluating(model: Any) -> Any:
    """``model`` in eval mode. ``eval()`` walks every module (a bridge has a thousand and
    more, a notebook's sweep pays it each run), so a model with none training is left as
    it is."""
    inner = getattr(model, "original_model", None)
    trees = [model, *([inner] if isinstance(inner, torch.nn.Module) else [])]
    if any(m.training for tree in trees for m in tree.modules()):
        model.eval()
    return model


def check_custom_metrics(model: Any, task: TokenizedTask, names: tuple[str, ...]) -> None:
    """Each custom metric on the clean and corrupted runs of the first prompts, before any
    unit: one finite value per prompt, or one line saying what it gave."""
    import torch

    prompts = np.arange(min(PROBE, task.n_prompts))
    lengths = torch.from_numpy(task.lengths[prompts]).to(model.cfg.device)
    runs = [t.to(model.cfg.device) for t in task.rows(prompts)]
    clean, corrupted = (run_cached(model, t, lengths, set(), reads=task.reads)[0] for t in runs)
    answer, wrong = (
        t[torch.from_numpy(prompts)].to(clean.device) for t in (task.answer, task.wrong)
    )
    for name in names:
        for run, logits in (("clean", clean), ("corrupted", corrupted)):
            try:
                value = evaluate((name,), logits, answer, wrong, clean)[0]
            except Exception as e:  # noqa: BLE001 - the user's function, said in one line
                why = f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            else:
                if value.shape != (len(prompts),):
                    why = f"gave shape {tuple(value.shape)}, not one value per prompt"
                elif not bool(torch.isfinite(value).all()):
                    why = "gave NaN or infinite values"
                else:
                    continue
            shapes = (
                "(logits [prompt, vocab], answer and wrong [prompt] (or [prompt, K] for sets "
                "and multi-token wrong), clean_logits [prompt, vocab])"
                if task.reads == 1
                else f"(logits [prompt, {task.reads}, vocab] at the answer's positions, answer "
                f"[prompt, {task.reads}] padded -1 at the front, wrong, clean_logits like logits)"
            )
            raise ConfigError(
                f"metric.custom: {name} {why} on the {run} run of the first "
                f"{len(prompts)} prompts; it takes {shapes} and returns [prompt]"
            )


def with_saes(model: Any, task: TokenizedTask, spec: SweepSpec, shape: ModelShape) -> ModelShape:
    """Load and attach the SAEs (``sweep.engine.latents``); the shape with their latents,
    and those ``grid.latents=top:N`` picks."""
    from sweep.engine import latents
    from sweep.models.sae import attach
    from sweep.spec import GridSpec

    saes = latents.load(spec.sae.configs, model)
    for sae in saes.values():  # the forwards' share: an encoding is made before any forward
        sae.budget(spec.runner.memory_mb * 2**20 * (1 - CACHE_SHARE))
    attach(model, saes)
    configs = spec.sae.configs
    chosen = spec.grid.latents if isinstance(spec.grid, GridSpec) else None
    top: tuple[int, ...] = ()
    if isinstance(chosen, str) and chosen.startswith("top:"):
        top = latents.top_latents(model, task, int(chosen.split(":")[1]))
    return dataclasses.replace(
        shape,
        n_latents=max(c.d_sae for c in configs),
        sae_layers=tuple(c.layer for c in configs),
        sae_stage=configs[0].stage,
        top_latents=top,
    )


def probe_prompts(model: Any, seq_len: int, latent_width: int, nbytes: float) -> int:
    """``PROBE`` prompts, or fewer where their SAE latents (the width the cached runs
    keep, at each SAE, in both runs) would take more than ``nbytes``: ``grid.latents=all``
    of a wide SAE on long prompts."""
    saes = attached(model)
    if not latent_width or not saes:
        return PROBE
    item = next(iter(saes.values())).w["W_dec"].element_size()
    per_prompt = 2 * len(saes) * seq_len * latent_width * item
    return max(1, min(PROBE, int(nbytes // per_prompt)))


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
