"""The patched-forward engine and the worker that owns the model.

Many cells ride in one forward: the cells of one layer are stacked along the batch
dimension, as many as ``runner.memory_mb`` allows. The forward starts at the patched layer
from the cached run, and only each prompt's last position is unembedded, which is all the
metric reads. With the suffix forward (``sweep.suffix``) only positions at and after the
patched one are recomputed, over the cached keys and values of earlier ones; models it
does not implement run through their own hooked forward from the patched layer.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from sweep import __version__, sources
from sweep.atp import attributions, per_cell
from sweep.components import COMPONENTS, Component, get_component
from sweep.errors import ConfigError
from sweep.metrics import evaluate
from sweep.models import load_model
from sweep.patches import hook_patch, packed_patch
from sweep.plan import Axes, ModelShape, WorkUnit, make_axes
from sweep.spec import SweepSpec
from sweep.suffix import STAGES, Rows, SuffixForward
from sweep.tasks import TokenizedTask, load_examples, reference_tokens, tokenize

log = logging.getLogger(__name__)

UNEMBED_IN = "unembed.hook_in"


@dataclass(frozen=True)
class TaskInfo:
    """What the driver needs from a worker to plan and create the store."""

    shape: ModelShape
    seq_len: int
    n_prompts: int
    lengths: tuple[int, ...]
    clean_str: tuple[tuple[str, ...], ...]
    corrupted_str: tuple[tuple[str, ...], ...]
    clean_baseline: np.ndarray
    """[metric, prompt] metric of the unpatched clean run."""
    corrupted_baseline: np.ndarray
    task_digest: str
    versions: dict[str, str]
    engine: str
    """``fast`` (suffix forward) or ``hooks`` (the model's hooked forward)."""


class Worker:
    """Loads the model once, keeps the clean and corrupted runs, executes work units.

    The same class runs in-process and inside a Ray actor. The *base* run is the one being
    changed (corrupted when denoising; clean when noising or ablating); the *source* is what
    a cell gets: the other run's activation, zero, a mean, or another prompt's activation.
    """

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.model = load_model(spec.model)
        self.task: TokenizedTask = tokenize(load_examples(spec.task, self.model), self.model)
        self.device = self.model.cfg.device
        self.shape = ModelShape(int(self.model.cfg.n_layers), int(self.model.cfg.n_heads))
        _check_kv_heads(spec.grid.components, self.model.cfg)
        _check_hooks(spec.grid.components, self.model)
        self.axes: Axes = make_axes(spec.grid, self.shape, self.task.seq_len)
        self.first = min(self.axes.layers)
        self.suffix = self._suffix_forward()
        self.iv = spec.intervention
        grid_hooks = {c.hook_name(i) for c in spec.grid.components for i in self.axes.layers}
        self._run_both(grid_hooks)
        self.answer = self.task.answer.to(self.device)
        self.wrong = self.task.wrong.to(self.device)
        self.last = (self.task.lengths - 1).to(self.device)
        self.reference = self._reference(grid_hooks)
        self.donors = (
            sources.donors(self.task.lengths, self.iv.samples, self.iv.seed)
            if self.iv.kind == "resample"
            else None
        )
        self.estimates = self._attributions(grid_hooks) if self.iv.kind == "atp" else {}
        if self.suffix is not None:
            self._verify_suffix(self.suffix)
        self.engine = "fast" if self.suffix is not None else "hooks"
        self._check_budget()

    def _run_both(self, grid_hooks: set[str]) -> None:
        """Run clean and corrupted once, keeping what the base run and the source need.

        Ablations take their source from the base (clean) run itself.
        """
        base_names = self._base_names() | (grid_hooks if self.iv.is_ablation else set())
        source_names = set() if self.iv.is_ablation else grid_hooks
        clean_names, corr_names = base_names, source_names
        if self.iv.base == "corrupted":
            clean_names, corr_names = source_names, base_names
        self.clean_logits, clean = self._run_cached(self.task.clean, clean_names)
        self.corr_logits, corr = self._run_cached(self.task.corrupted, corr_names)
        self.base, self.source = (clean, corr) if self.iv.base == "clean" else (corr, clean)
        self.base_logits = self.clean_logits if self.iv.base == "clean" else self.corr_logits

    def _check_budget(self) -> None:
        cell = self.task.n_prompts * row_bytes(self.model.cfg, self.task.seq_len, self.engine)
        if cell / 2**20 > self.spec.memory_mb:
            log.warning(
                "runner.memory_mb=%g is less than one cell needs (about %.0f MB for %d prompts); "
                "running one cell per forward",
                self.spec.memory_mb,
                cell / 2**20,
                self.task.n_prompts,
            )

    def _suffix_forward(self) -> SuffixForward | None:
        if self.spec.engine == "hooks":
            return None
        why = SuffixForward.unsupported(self.model)
        if why is None:
            return SuffixForward(self.model)
        self._no_suffix(f"this model is not supported: {why}")
        return None

    def _no_suffix(self, why: str) -> None:
        if self.spec.engine == "fast":
            raise ConfigError(f"runner.engine=fast: {why}; use runner.engine=auto or hooks")
        log.warning("using the model's hooked forward (slower): %s", why)
        self.suffix = None

    def _base_names(self) -> set[str]:
        """The base run's hooks a forward starts from; the suffix forward also reuses every
        later layer's keys and values, and checks itself on the first layer's stages."""
        layers = range(self.first, self.shape.n_layers)
        names = {f"blocks.{i}.hook_resid_pre" for i in self.axes.layers}
        if self.suffix is not None:
            names |= {f"blocks.{i}.attn.hook_{kv}" for i in layers for kv in "kv"}
            stages = {c.hook_name(self.first) for c in COMPONENTS.values()}
            names |= stages & set(self.model.hook_dict)
        return names

    @torch.inference_mode()
    def _run_cached(self, tokens: torch.Tensor, names: set[str]) -> tuple[torch.Tensor, Any]:
        logits, cache = self.model.run_with_cache(
            tokens.to(self.device), names_filter=lambda n: n in names
        )
        rows = torch.arange(tokens.shape[0])
        return logits[rows, self.task.lengths - 1], cache

    def _reference(self, hooks: set[str]) -> Any:
        """Mean ablation over a reference file: its run, cached at the grid's hooks (and
        the digest of its tokens, which the store's fingerprint includes)."""
        self.reference_digest = ""
        if self.iv.reference is None:
            return None
        tokens = reference_tokens(self.iv.reference, self.model, self.task.seq_len)
        self.reference_digest = "+ref:" + hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16]
        with torch.inference_mode():
            _, cache = self.model.run_with_cache(
                tokens.to(self.device), names_filter=lambda n: n in hooks
            )
        return cache

    def _attributions(self, hooks: set[str]) -> dict[str, torch.Tensor]:
        """AtP products for every grid hook, [metric, *activation], from the base run."""
        tokens = self.task.clean if self.iv.base == "clean" else self.task.corrupted
        rows = torch.arange(self.task.n_prompts, device=self.device)

        def metric(logits: torch.Tensor) -> torch.Tensor:
            last = logits[rows, self.last]
            return evaluate(self.spec.metrics, last, self.answer, self.wrong, self.clean_logits)

        return attributions(self.model, tokens.to(self.device), hooks, self.source, metric)

    def source_samples(self, c: Component, layer: int) -> list[torch.Tensor]:
        """What each sample writes into ``c`` at ``layer``, [prompt, ...] each."""
        hook = c.hook_name(layer)
        if self.iv.kind in ("patch", "atp"):
            return [self.source[hook]]
        act = self.base[hook]
        if self.iv.kind == "zero":
            return [sources.zeros(act)]
        if self.iv.kind == "mean":
            if self.reference is None:
                return [sources.position_mean(c, act, self.task.lengths)]
            ref = self.reference[hook]
            full = torch.full((ref.shape[0],), self.task.seq_len)
            return [sources.position_mean(c, ref, full)[: act.shape[0]].expand_as(act)]
        assert self.donors is not None  # resample
        return [act[d.to(act.device)] for d in self.donors]

    @torch.inference_mode()
    def _verify_suffix(self, suffix: SuffixForward) -> None:
        """Run the unpatched base through the suffix forward and compare with the model's
        own hooks and logits; on any difference, fall back to the hooked forward."""
        n_p = self.task.n_prompts
        rows = Rows.make(torch.arange(n_p, device=self.device), 0 * self.last, self.last)
        x = self._entry(self.first, rows)
        keys, values = self._kv()
        trace: dict[str, torch.Tensor] = {}
        suffix.block(self.first, x, rows, keys[self.first], values[self.first], trace=trace)
        got, want = {}, {}
        valid = torch.arange(self.task.seq_len, device=self.device) <= self.last[:, None]
        by_stage = {c.stage: c for c in COMPONENTS.values()}
        for c in (by_stage[st] for st in STAGES):  # in block order: name the first difference
            if c.hook_name(self.first) not in self.base:
                continue  # a stage this model does not have (MLP of attention-only models)
            ref = self.base[c.hook_name(self.first)]
            if c.act_kind == "pattern":
                mask = valid[:, None, :, None]
                got[c.stage], want[c.stage] = trace[c.stage] * mask, ref * mask
            else:
                got[c.stage], want[c.stage] = trace[c.stage], ref[rows.tok_prompt, rows.tok_pos]
        got["logits"] = suffix.forward(self.first, x, rows, keys, values)
        want["logits"] = self.base_logits
        eps = torch.finfo(x.dtype).eps
        for name, ref in want.items():
            err = (got[name].float() - ref.float()).abs().max().item()
            tol = max(1e-4, 20 * eps) * max(1.0, ref.float().abs().max().item())
            if not err <= tol:
                self._no_suffix(
                    f"its blocks differ from the suffix forward at {name} "
                    f"(max abs difference {err:.3g} > {tol:.3g})"
                )
                return

    def _kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The base run's keys and values per layer (empty before the first patched layer)."""
        empty = torch.empty(0, device=self.device)
        layers = range(self.shape.n_layers)
        return (
            [self.base[f"blocks.{i}.attn.hook_k"] if i >= self.first else empty for i in layers],
            [self.base[f"blocks.{i}.attn.hook_v"] if i >= self.first else empty for i in layers],
        )

    def _entry(self, layer: int, rows: Rows) -> torch.Tensor:
        """The packed residual entering ``layer``, from the base run."""
        return self.base[f"blocks.{layer}.hook_resid_pre"][rows.tok_prompt, rows.tok_pos]

    def describe(self) -> TaskInfo:
        t = self.task
        return TaskInfo(
            shape=self.shape,
            seq_len=t.seq_len,
            n_prompts=t.n_prompts,
            lengths=tuple(int(x) for x in t.lengths),
            clean_str=t.clean_str,
            corrupted_str=t.corrupted_str,
            clean_baseline=self._metric(self.clean_logits, t.n_prompts),
            corrupted_baseline=self._metric(self.corr_logits, t.n_prompts),
            task_digest=t.digest() + self.reference_digest,
            versions={"patchsweep": __version__, "transformer_lens": version("transformer-lens")},
            engine=self.engine,
        )

    def _metric(self, logits: torch.Tensor, n_rows: int) -> np.ndarray:
        return self._evaluate(logits, n_rows // self.task.n_prompts).cpu().numpy()

    def _evaluate(self, logits: torch.Tensor, reps: int) -> torch.Tensor:
        """[metric, reps * prompt] for logits of ``reps`` stacked copies of the prompts."""
        answer, wrong = self.answer.repeat(reps), self.wrong.repeat(reps)
        clean = self.clean_logits.repeat(reps, 1)
        return evaluate(self.spec.metrics, logits, answer, wrong, clean)

    def cells_per_forward(self) -> int:
        """As many cells as fit ``runner.memory_mb`` (at least one)."""
        cell = self.task.n_prompts * row_bytes(self.model.cfg, self.task.seq_len, self.engine)
        return max(1, int(self.spec.memory_mb * 2**20 // cell))

    @torch.inference_mode()
    def run(self, unit: WorkUnit) -> np.ndarray:
        """Values of one unit: [metric, layer, (pos), (head), prompt], float32."""
        c = unit.spec
        cells = _cells(unit)
        if self.iv.kind == "atp":
            per_layer = [self._estimated(c, layer, unit) for layer in unit.layers]
        else:
            per_layer = [self._patched(c, layer, cells) for layer in unit.layers]
        out = torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
        grid = [len(unit.positions)] if c.has_pos else []
        grid += [len(unit.heads)] if c.has_head else []
        out = out.reshape(out.shape[0], len(unit.layers), *grid, self.task.n_prompts)
        if c.has_pos:
            _mask_padding(out, unit.positions, self.task.lengths.numpy())
        return out

    @torch.inference_mode()
    def exact(self, component: str, cells: list[tuple[int, int, int]]) -> np.ndarray:
        """Exact patching of single (layer, pos, head) cells (-1: no such axis), whatever
        the intervention: [metric, cell, prompt]. AtP checks its top cells with it."""
        c = get_component(component)
        out = [
            self._forward(c, layer, [(pos, head)], self.source[c.hook_name(layer)])
            for layer, pos, head in cells
        ]
        vals = torch.cat(out, dim=1).cpu().numpy().astype(np.float32)
        if c.has_pos:
            bad = np.array([p for _, p, _ in cells])[:, None] >= self.task.lengths.numpy()
            vals[:, bad] = np.nan
        return vals

    def _patched(self, c: Component, layer: int, cells: list[tuple[int, int]]) -> torch.Tensor:
        """[metric, cell, prompt] of one layer's cells, averaged over source samples."""
        k = self.cells_per_forward()
        per_sample = [
            torch.cat(
                [self._forward(c, layer, cells[i : i + k], src) for i in range(0, len(cells), k)],
                dim=1,
            )
            for src in self.source_samples(c, layer)
        ]
        return torch.stack(per_sample).mean(0)

    def _estimated(self, c: Component, layer: int, unit: WorkUnit) -> torch.Tensor:
        """AtP: the base run's metric plus each cell's first-order change, [metric, cell,
        prompt]."""
        delta = per_cell(c, self.estimates[c.hook_name(layer)]).movedim(1, -1)
        if c.has_pos:
            delta = delta[:, list(unit.positions)]
        if c.has_head:
            delta = delta.index_select(2 if c.has_pos else 1, torch.tensor(unit.heads))
        base = self._evaluate(self.base_logits, 1)
        flat = delta.reshape(delta.shape[0], -1, delta.shape[-1])
        return base[:, None, :] + flat.to(base.device)

    def _forward(
        self, c: Component, layer: int, cells: list[tuple[int, int]], src: torch.Tensor
    ) -> torch.Tensor:
        """One forward over ``len(cells)`` stacked copies of the prompts: [metric, cell, prompt]."""
        n_p = self.task.n_prompts
        g = len(cells)
        prompt = torch.arange(n_p, device=self.device).repeat(g)
        pos = torch.tensor([p for p, _ in cells], device=self.device).repeat_interleave(n_p)
        head = torch.tensor([h for _, h in cells], device=self.device).repeat_interleave(n_p)
        if self.suffix is not None:
            last = self.last.repeat(g)
            start = torch.minimum(pos, last) if c.has_pos else torch.zeros_like(last)
            rows = Rows.make(prompt, start, last)
            keys, values = self._kv()
            patch = packed_patch(c, src, rows, pos, head)
            logits = self.suffix.forward(
                layer, self._entry(layer, rows), rows, keys, values, c.stage, patch
            )
        else:
            logits = self._hooked_forward(c, layer, hook_patch(c, src, prompt, pos, head), g)
        return self._evaluate(logits, g).reshape(len(self.spec.metrics), g, n_p)

    def _hooked_forward(self, c: Component, layer: int, patch: Any, g: int) -> torch.Tensor:
        """The model's own forward from ``layer`` (all positions), unembedding the last."""
        x = self.base[f"blocks.{layer}.hook_resid_pre"].repeat(g, 1, 1)
        last = self.last.repeat(g)
        rows = torch.arange(len(last), device=self.device)

        def keep_last(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act[rows, last].unsqueeze(1)

        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
            (c.hook_name(layer), patch),
            (UNEMBED_IN, keep_last),
        ]
        return self.model.run_with_hooks(x, start_at_layer=layer, fwd_hooks=hooks)[:, 0]


def row_bytes(cfg: Any, seq_len: int, engine: str) -> int:
    """Activation bytes one batch row needs in a patched forward (an upper estimate).

    Per position: the residual and its copies, q/k/v/z and their padded copies, and the
    MLP hidden layer with the activation function's temporaries; per head the [seq, seq]
    scores; the last position's logits and the metric's softmax. The factors were set from
    measured peaks (bench/patching_speed.py) with a margin for the allocator. The hooked
    forward keeps more alive: twice that.
    """
    itemsize = torch.finfo(getattr(cfg, "dtype", torch.float32)).bits // 8
    d, d_mlp, h = int(cfg.d_model), int(cfg.d_mlp or 4 * cfg.d_model), int(cfg.n_heads)
    per_row = seq_len * (24 * d + 8 * d_mlp) + 2 * h * seq_len**2 + 3 * int(cfg.d_vocab)
    return itemsize * per_row * (1 if engine == "fast" else 2)


def _check_kv_heads(components: tuple[Component, ...], cfg: Any) -> None:
    """Grouped-query models have fewer k/v heads than query heads: no per-head k/v grid."""
    n_kv = getattr(cfg, "n_key_value_heads", None)
    kv = [c.name for c in components if c.hook.endswith(("hook_k", "hook_v"))]
    if kv and n_kv is not None and n_kv != cfg.n_heads:
        raise ConfigError(
            f"grid.components: {kv} are not supported on this model: it has {n_kv} key/value "
            f"heads shared by {cfg.n_heads} query heads (grouped-query attention); "
            "sweep z, q or pattern instead"
        )


def _check_hooks(components: tuple[Component, ...], model: Any) -> None:
    """Components the model has no hook for (e.g. mlp_out of an attention-only model)."""
    missing = [c.name for c in components if c.hook_name(0) not in model.hook_dict]
    if missing:
        raise ConfigError(
            f"grid.components: {missing} do not exist in this model "
            f"(attention-only: {bool(getattr(model.cfg, 'attn_only', False))}); remove them"
        )


def _cells(unit: WorkUnit) -> list[tuple[int, int]]:
    """(pos, head) per cell in store order; -1 where the component has no such axis."""
    pos = unit.positions or (-1,)
    heads = unit.heads or (-1,)
    return list(itertools.product(pos, heads))


def _mask_padding(out: np.ndarray, positions: tuple[int, ...], lengths: np.ndarray) -> None:
    """Patching a padding position is not a real cell: store NaN there."""
    pos = np.asarray(positions)
    invalid = pos[:, None] >= lengths[None, :]  # [pos, prompt]
    if not invalid.any():
        return
    # out: [metric, layer, pos, (head), prompt]
    shape = [1, 1, len(pos)] + [1] * (out.ndim - 4) + [len(lengths)]
    out[np.broadcast_to(invalid.reshape(shape), out.shape)] = np.nan


__all__ = ["COMPONENTS", "TaskInfo", "Worker"]
