"""Metrics on the logits at each prompt's answer position.

A metric maps last-position logits [batch, vocab], the answer and wrong token ids [batch]
and the clean run's last-position logits [batch, vocab] to one value per row. The engine
only ever computes those logits, never the full [batch, pos, vocab] tensor.
Imports no torch at load time, so the config checks can read ``METRICS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the engine; the config side only needs the names
    import torch

MetricFn = Callable[
    ["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"
]


def _at(values: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    return values.gather(1, token[:, None])[:, 0]


def logit_diff(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """logit(answer) - logit(wrong)."""
    return _at(logits, answer) - _at(logits, wrong)


def prob(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Probability of the answer token."""
    return _at(logits.softmax(-1), answer)


def logprob(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Log-probability of the answer token."""
    return _at(logits.log_softmax(-1), answer)


def loss(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the answer token (= -logprob)."""
    return -logprob(logits, answer, wrong, clean)


def kl(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """KL(clean || patched) of the next-token distributions: 0 when the patched run
    predicts exactly what the clean run does."""
    p_log = clean.log_softmax(-1)
    return (p_log.exp() * (p_log - logits.log_softmax(-1))).sum(-1)


METRICS: dict[str, MetricFn] = {
    "logit_diff": logit_diff,
    "prob": prob,
    "logprob": logprob,
    "loss": loss,
    "kl": kl,
}


def evaluate(
    names: tuple[str, ...],
    logits: torch.Tensor,
    answer: torch.Tensor,
    wrong: torch.Tensor,
    clean: torch.Tensor,
) -> torch.Tensor:
    """Every named metric, stacked to [metric, batch] in float32."""
    import torch

    logits, clean = logits.float(), clean.float()
    return torch.stack([METRICS[n](logits, answer, wrong, clean) for n in names])
