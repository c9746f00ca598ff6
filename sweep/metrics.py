"""Metrics on the logits at each prompt's answer position.

A metric maps last-position logits [batch, vocab], the answer and wrong token ids [batch]
and the clean run's last-position logits [batch, vocab] to one value per row. A task with
answer sets gives the ids as [batch, K], padded with -1: ``prob`` and ``prob_diff`` sum
over a set, ``logit_diff`` averages over it, ``logit_gap`` takes the wrong set's largest,
``logprob`` and ``loss`` are the log of the set's total probability.

A multi-token answer is teacher forced: the logits are [batch, T, vocab] at the T
positions that predict its tokens, and the answer ids [batch, T] right-aligned (padded
with -1 in front, for answers shorter than the task's longest). ``logprob`` sums the
log-probability of each token given those before it, ``loss`` is its negative, ``prob``
the whole continuation's probability, ``kl`` sums over the answer's positions. Metrics
that compare the answer with the wrong one at one position (``WRONG_AT_ONE_POSITION``)
take one-token answers. The engine only ever computes the read logits, never the full
[batch, pos, vocab] tensor. A custom metric
(``metric.custom=module:function``) is such a function of the user's. Imports no torch at
load time, so the config checks can read ``METRICS``.
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
    """values[row, token[row]]; for sets [batch, K], each member's value (padding: 0)."""
    if token.dim() == 1:
        return values.gather(1, token[:, None])[:, 0]
    return values.gather(1, token.clamp(min=0)).masked_fill(token < 0, 0.0)


def _mean_at(values: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """The value at the token, or its mean over a set."""
    if token.dim() == 1:
        return _at(values, token)
    return _at(values, token).sum(1) / (token >= 0).sum(1)


def _sum_at(values: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """The value at the token, or its sum over a set."""
    return _at(values, token) if token.dim() == 1 else _at(values, token).sum(1)


def _sequence_logprob(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Sum over a teacher-forced answer's positions of its token's log-probability."""
    logp = logits.log_softmax(-1).gather(2, answer.clamp(min=0)[..., None])[..., 0]
    return logp.masked_fill(answer < 0, 0.0).sum(1)


def logit_diff(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """logit(answer) - logit(wrong); for sets, the mean logit of each."""
    return _mean_at(logits, answer) - _mean_at(logits, wrong)


def logit_gap(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """logit(answer) - the largest logit of the wrong set: the docstring paper's metric
    (Heimersheim and Janiak 2023); logit_diff for one wrong token."""
    if wrong.dim() == 1:
        return logit_diff(logits, answer, wrong, clean)
    others = logits.gather(1, wrong.clamp(min=0)).masked_fill(wrong < 0, float("-inf"))
    return _mean_at(logits, answer) - others.max(1).values


def prob(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Probability of the answer token (of any token of the answer set; of the whole
    multi-token answer)."""
    if logits.dim() == 3:
        return _sequence_logprob(logits, answer).exp()
    return _sum_at(logits.softmax(-1), answer)


def prob_diff(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """P(answer) - P(wrong), each summed over its set: greater-than's probability
    difference (Hanna et al. 2023)."""
    probs = logits.softmax(-1)
    return _sum_at(probs, answer) - _sum_at(probs, wrong)


def logprob(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Log-probability of the answer token (of the answer set: log of its total; of a
    multi-token answer: the sum over its tokens, each given those before)."""
    if logits.dim() == 3:
        return _sequence_logprob(logits, answer)
    logp = logits.log_softmax(-1)
    if answer.dim() == 1:
        return _at(logp, answer)
    return _at(logp, answer).masked_fill(answer < 0, float("-inf")).logsumexp(1)


def loss(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the answer (= -logprob; a multi-token answer's summed over its
    tokens)."""
    return -logprob(logits, answer, wrong, clean)


def kl(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """KL(clean || patched) of the next-token distributions: 0 when the patched run
    predicts exactly what the clean run does (summed over a multi-token answer's
    positions)."""
    p_log = clean.log_softmax(-1)
    per_position = (p_log.exp() * (p_log - logits.log_softmax(-1))).sum(-1)
    if logits.dim() == 3:
        return per_position.masked_fill(answer < 0, 0.0).sum(1)
    return per_position


METRICS: dict[str, MetricFn] = {
    "logit_diff": logit_diff,
    "logit_gap": logit_gap,
    "prob": prob,
    "prob_diff": prob_diff,
    "logprob": logprob,
    "loss": loss,
    "kl": kl,
}


WRONG_AT_ONE_POSITION = ("logit_diff", "logit_gap", "prob_diff")
"""Metrics that compare answer and wrong tokens at one position: one-token answers only."""


def check_multi_token(names: tuple[str, ...], several: str | None) -> None:
    """One line if a metric compares answer and wrong where either is several tokens
    (``several``: the first such line of the task, as ``TokenizedTask.several_tokens``
    says it)."""
    from sweep.errors import ConfigError

    clash = [n for n in names if n in WRONG_AT_ONE_POSITION]
    if several and clash:
        raise ConfigError(
            f"metric.names: {clash[0]} compares the answer and wrong tokens at one position, "
            f"but {several} for this tokenizer; use logprob, loss, prob or kl (teacher "
            "forced over the answer's tokens), a custom metric, or one-token answers"
        )


CUSTOM: dict[str, MetricFn] = {}
"""The custom metrics this process has loaded (``metric.custom``), by name."""


def custom(ref: str) -> tuple[str, MetricFn]:
    """``module:function`` imported (the module from the working directory or the
    installed packages): its name as a metric, and the function. One line if it is not
    there."""
    import importlib
    import sys

    from sweep.errors import ConfigError

    module, sep, name = ref.partition(":")
    if not sep or not module or not name.isidentifier():
        raise ConfigError(
            f"metric.custom: {ref!r} is not module:function (e.g. my_metrics:top_prob)"
        )
    if "" not in sys.path:  # the working directory, as ``python -m`` has it
        sys.path.insert(0, "")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ConfigError(f"metric.custom: cannot import {module!r} ({e}); give a module "
                          "importable from the working directory") from None  # fmt: skip
    except AttributeError:
        raise ConfigError(f"metric.custom: module {module!r} has no {name!r}") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed as it was imported
        raise ConfigError(f"metric.custom: importing {module!r} raised "
                          f"{type(e).__name__}: {e}") from None  # fmt: skip
    if not callable(fn):
        raise ConfigError(f"metric.custom: {ref} is a {type(fn).__name__}, not a function")
    return name, fn


def load_custom(refs: tuple[str, ...]) -> tuple[str, ...]:
    """Import and register the custom metrics; their names, in order."""
    names = []
    for ref in refs:
        name, fn = custom(ref)
        CUSTOM[name] = fn
        names.append(name)
    return tuple(names)


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
    fns = [METRICS[n] if n in METRICS else CUSTOM[n] for n in names]
    return torch.stack([fn(logits, answer, wrong, clean).float() for fn in fns])
