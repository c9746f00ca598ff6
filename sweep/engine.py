"""The patched-forward engine and the worker that owns the model.

Many cells ride in one forward: the cells of one layer are stacked along the batch
dimension, the forward starts at that layer from the cached ``resid_pre`` (the prefix
is unchanged by a patch there), and the unembedding runs only at each prompt's last
position, which is all the metric reads.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from sweep import __version__
from sweep.components import COMPONENTS, Component
from sweep.errors import ConfigError
from sweep.metrics import evaluate
from sweep.models import load_model
from sweep.plan import Axes, ModelShape, WorkUnit, make_axes
from sweep.spec import SweepSpec
from sweep.tasks import TokenizedTask, load_examples, tokenize

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


class Worker:
    """Loads the model once, keeps the clean and corrupted runs, executes work units.

    The same class runs in-process and (later) inside a Ray actor.
    """

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.model = load_model(spec.model)
        self.task: TokenizedTask = tokenize(load_examples(spec.task, self.model), self.model)
        self.device = self.model.cfg.device
        self.shape = ModelShape(int(self.model.cfg.n_layers), int(self.model.cfg.n_heads))
        _check_kv_heads(spec.grid.components, self.model.cfg)
        self.axes: Axes = make_axes(spec.grid, self.shape, self.task.seq_len)
        names = _cache_names(spec.grid.components, self.axes.layers)
        self.clean_logits, self.clean_cache = self._run_cached(self.task.clean, names)
        self.corr_logits, self.corr_cache = self._run_cached(self.task.corrupted, names)
        self.answer = self.task.answer.to(self.device)
        self.wrong = self.task.wrong.to(self.device)
        self.last = (self.task.lengths - 1).to(self.device)

    @torch.inference_mode()
    def _run_cached(self, tokens: torch.Tensor, names: set[str]) -> tuple[torch.Tensor, Any]:
        logits, cache = self.model.run_with_cache(
            tokens.to(self.device), names_filter=lambda n: n in names
        )
        rows = torch.arange(tokens.shape[0])
        return logits[rows, self.task.lengths - 1], cache

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
            task_digest=t.digest(),
            versions={"patchsweep": __version__, "transformer_lens": version("transformer-lens")},
        )

    def _metric(self, logits: torch.Tensor, n_rows: int) -> np.ndarray:
        reps = n_rows // self.task.n_prompts
        vals = evaluate(
            self.spec.metrics, logits, self.answer.repeat(reps), self.wrong.repeat(reps)
        )
        return vals.cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def run(self, unit: WorkUnit) -> np.ndarray:
        """Values of one unit: [metric, layer, (pos), (head), prompt], float32."""
        c = unit.spec
        cells = _cells(unit)
        per_forward = max(
            1, self.spec.max_batch_tokens // (self.task.n_prompts * self.task.seq_len)
        )
        per_layer = []
        for layer in unit.layers:
            parts = [
                self._forward(c, layer, cells[i : i + per_forward])
                for i in range(0, len(cells), per_forward)
            ]
            per_layer.append(torch.cat(parts, dim=1))  # [metric, cell, prompt]
        out = torch.stack(per_layer, dim=1).cpu().numpy().astype(np.float32)
        grid = [len(unit.positions)] if c.has_pos else []
        grid += [len(unit.heads)] if c.has_head else []
        out = out.reshape(out.shape[0], len(unit.layers), *grid, self.task.n_prompts)
        if c.has_pos:
            _mask_padding(out, unit.positions, self.task.lengths.numpy())
        return out

    def _forward(self, c: Component, layer: int, cells: list[tuple[int, int]]) -> torch.Tensor:
        """One forward over ``len(cells)`` stacked copies of the prompts: [metric, cell, prompt]."""
        n_p = self.task.n_prompts
        g = len(cells)
        base, source = self.corr_cache, self.clean_cache  # denoise: clean into corrupted
        x = base[f"blocks.{layer}.hook_resid_pre"].repeat(g, 1, 1)
        prompt = torch.arange(n_p, device=self.device).repeat(g)
        pos = torch.tensor([p for p, _ in cells], device=self.device).repeat_interleave(n_p)
        head = torch.tensor([h for _, h in cells], device=self.device).repeat_interleave(n_p)
        src = source[c.hook_name(layer)]
        patch = _patcher(c, src, prompt, pos, head)
        last = self.last.repeat(g)
        rows = torch.arange(g * n_p, device=self.device)

        def keep_last(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act[rows, last].unsqueeze(1)

        logits = self.model.run_with_hooks(
            x,
            start_at_layer=layer,
            fwd_hooks=[(c.hook_name(layer), patch), (UNEMBED_IN, keep_last)],
        )[:, 0]
        vals = evaluate(self.spec.metrics, logits, self.answer.repeat(g), self.wrong.repeat(g))
        return vals.reshape(len(self.spec.metrics), g, n_p)


def _patcher(
    c: Component, src: torch.Tensor, prompt: torch.Tensor, pos: torch.Tensor, head: torch.Tensor
) -> Any:
    """A hook that writes each batch row's cell from the source run (row r = cell r // P)."""
    rows = torch.arange(prompt.shape[0], device=prompt.device)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if c.act_kind == "resid":
            act[rows, pos] = src[prompt, pos].to(act.dtype)
        elif c.act_kind == "pattern":
            act[rows, head] = src[prompt, head].to(act.dtype)
        elif c.has_pos:
            act[rows, pos, head] = src[prompt, pos, head].to(act.dtype)
        else:
            act[rows, :, head] = src[prompt, :, head].to(act.dtype)
        return act

    return hook


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


def _cache_names(components: tuple[Component, ...], layers: tuple[int, ...]) -> set[str]:
    """Only the hooks the grid reads: the patched activations and each layer's entry point."""
    names = {f"blocks.{layer}.hook_resid_pre" for layer in layers}
    names |= {c.hook_name(layer) for c in components for layer in layers}
    return names


__all__ = ["COMPONENTS", "TaskInfo", "Worker"]
