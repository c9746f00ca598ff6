"""Metrics on the logits at each prompt's answer position.

A metric maps last-position logits [batch, vocab] plus the answer and wrong token ids
[batch] to one value per row. The engine only ever computes those logits, never the
full [batch, pos, vocab] tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MetricFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def logit_diff(logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """logit(answer) - logit(wrong), per row."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, answer] - logits[rows, wrong]


METRICS: dict[str, MetricFn] = {"logit_diff": logit_diff}


def evaluate(
    names: tuple[str, ...], logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor
) -> torch.Tensor:
    """Every named metric, stacked to [metric, batch] in float32."""
    logits = logits.float()
    return torch.stack([METRICS[n](logits, answer, wrong) for n in names])
