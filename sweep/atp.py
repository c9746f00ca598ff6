"""Attribution patching (AtP): a first-order estimate of every cell at once.

Patching a cell changes the activation by ``delta = source - base`` there; to first order
the metric changes by ``delta . d metric / d activation``. One forward and one backward of
the base run (per metric) give that gradient for every hook, so the whole grid costs about
three forwards instead of one per cell (Nanda 2023; Kramar et al. 2024). The estimate is
exact for a metric linear in the activation and drifts where the network saturates, which
is why ``intervention.verify_top_k`` re-checks the largest cells by exact patching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sweep.components import Component


def attributions(
    model: Any,
    tokens: torch.Tensor,
    hooks: set[str],
    source: Any,
    metric: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Per hook: [metric, *activation shape] of ``(source - base) * d metric / d base``.

    ``metric`` maps the full logits [prompt, pos, vocab] to [metric, prompt]; prompts are
    independent rows, so the gradient of the sum over prompts is each prompt's own.
    """
    acts: dict[str, torch.Tensor] = {}

    def keeper(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
            acts[name] = act  # by the requested name: the bridge may alias hooks
            return act

        return keep

    names = sorted(hooks)
    with torch.enable_grad(), model.hooks(fwd_hooks=[(h, keeper(h)) for h in names]):
        values = metric(model(tokens))
        out: dict[str, list[torch.Tensor]] = {h: [] for h in names}
        for row in values:
            grads = torch.autograd.grad(row.sum(), [acts[h] for h in names], retain_graph=True)
            for h, g in zip(names, grads, strict=True):
                out[h].append(((source[h] - acts[h].detach()) * g).detach())
    return {h: torch.stack(v) for h, v in out.items()}


def per_cell(c: Component, products: torch.Tensor) -> torch.Tensor:
    """Sum a hook's [metric, *activation] products over each cell of ``c``:
    [metric, prompt, (pos), (head)]."""
    if c.act_kind == "pattern":  # [m, prompt, head, q, k]: every position of a head
        return products.sum((-1, -2))
    if c.act_kind == "resid":  # [m, prompt, pos, d_model]
        return products.sum(-1)
    by_head = products.sum(-1)  # [m, prompt, pos, head]
    return by_head if c.has_pos else by_head.sum(2)
