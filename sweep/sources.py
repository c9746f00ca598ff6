"""What an intervention writes into a cell: the other run's activation, zero, a mean over
prompts, or another prompt's activation (resampling). Pure tensor logic, no model.

Activations are [prompt, pos, ...] (``resid`` and ``head`` kinds) or [prompt, head, q, k]
(``pattern``); every function returns one tensor of the same shape, indexed by prompt.
"""

from __future__ import annotations

import torch

from sweep.components import Component
from sweep.errors import TaskError


def zeros(act: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(act)


def position_mean(c: Component, act: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over prompts at each position, over the prompts long enough to have it.

    Returned as one row per prompt of ``act`` so it patches like any other source.
    """
    pos_dim = 2 if c.act_kind == "pattern" else 1  # pattern: the query position
    seq = act.shape[pos_dim]
    valid = torch.arange(seq, device=act.device)[None, :] < lengths.to(act.device)[:, None]
    shape = [act.shape[0]] + [1] * (act.ndim - 1)
    shape[pos_dim] = seq
    w = valid.reshape(shape).to(act.dtype)
    mean = (act * w).sum(0, keepdim=True) / w.sum(0, keepdim=True).clamp(min=1)
    return mean.expand_as(act)


def donors(lengths: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """[samples, prompt] another prompt of the same token count for each prompt, drawn
    uniformly with a seeded generator (same seed, same donors)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths.cpu()
    out = torch.empty(samples, len(lengths), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        pool = [j for j in range(len(lengths)) if j != i and int(lengths[j]) == n]
        if not pool:
            raise TaskError(
                f"intervention=resample: prompt {i} ({n} tokens) has no other prompt of the "
                "same length to take activations from; give several prompts of each length"
            )
        pick = torch.randint(len(pool), (samples,), generator=gen)
        out[:, i] = torch.tensor(pool)[pick]
    return out
