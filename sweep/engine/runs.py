"""The cached clean and corrupted runs of a prompt block, which every patched forward starts from.

The *base* run is the one an intervention changes (corrupted when denoising; clean when
noising or ablating); only the hooks that a forward starts from and the sources read are
kept, and only each prompt's last-position logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sweep.metrics import evaluate
from sweep.tasks.tokenize import TokenizedTask


@dataclass
class BlockRuns:
    """Prompts ``start .. start + n - 1`` of the task, padded to their own longest."""

    start: int
    clean_tokens: torch.Tensor
    """[prompt, pos] on the model's device."""
    corrupted_tokens: torch.Tensor
    lengths: torch.Tensor
    """[prompt] real token counts, on the device."""
    answer: torch.Tensor
    wrong: torch.Tensor
    clean_logits: torch.Tensor
    """[prompt, vocab] at each prompt's last position."""
    corrupted_logits: torch.Tensor
    base_run: str
    base: dict[str, torch.Tensor]
    """The base run's activations at the hooks forwards and sources need."""
    source: dict[str, torch.Tensor]
    """The other run's activations at the grid's hooks (patching), else empty."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-block state of an estimator (AtP's products)."""

    @property
    def n(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean_tokens.shape[1])

    @property
    def last(self) -> torch.Tensor:
        return self.lengths - 1

    @property
    def base_logits(self) -> torch.Tensor:
        return self.clean_logits if self.base_run == "clean" else self.corrupted_logits

    def tokens(self, run: str) -> torch.Tensor:
        return self.clean_tokens if run == "clean" else self.corrupted_tokens

    def evaluate(self, metrics: tuple[str, ...], logits: torch.Tensor) -> torch.Tensor:
        """[metric, rows] for last-position logits of ``rows / n`` stacked copies of the
        block's prompts."""
        reps = logits.shape[0] // self.n
        clean = self.clean_logits.repeat(reps, 1)
        return evaluate(metrics, logits, self.answer.repeat(reps), self.wrong.repeat(reps), clean)


def run_cached(
    model: Any, tokens: torch.Tensor, lengths: torch.Tensor, names: set[str] | frozenset[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Last-position logits and the activations at ``names`` of one plain forward (names
    the model does not have, such as the MLP stages of an attention-only model, are left
    out)."""
    names = set(names) & set(model.hook_dict)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    return logits[rows, lengths - 1], {n: cache[n] for n in names}


def build_block(
    model: Any,
    task: TokenizedTask,
    start: int,
    stop: int,
    base_run: str,
    base_hooks: set[str],
    source_hooks: set[str],
) -> BlockRuns:
    """Run prompts ``start..stop-1`` clean and corrupted once, keeping what is needed."""
    device = model.cfg.device
    lengths = task.lengths[start:stop]
    width = int(lengths.max())
    clean = task.clean[start:stop, :width].to(device)
    corrupted = task.corrupted[start:stop, :width].to(device)
    lengths = lengths.to(device)
    other = "corrupted" if base_run == "clean" else "clean"
    hooks = {base_run: base_hooks, other: source_hooks}
    clean_logits, clean_cache = run_cached(model, clean, lengths, hooks["clean"])
    corr_logits, corr_cache = run_cached(model, corrupted, lengths, hooks["corrupted"])
    caches = {"clean": clean_cache, "corrupted": corr_cache}
    return BlockRuns(
        start=start,
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        lengths=lengths,
        answer=task.answer[start:stop].to(device),
        wrong=task.wrong[start:stop].to(device),
        clean_logits=clean_logits,
        corrupted_logits=corr_logits,
        base_run=base_run,
        base=caches[base_run],
        source=caches[other],
    )
