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
from typing import TYPE_CHECKING, Any

import torch

from sweep.components import SAE_SUFFIX, Component
from sweep.engine.cells import at_reads, per_cell
from sweep.interventions.base import Context, Estimator, Intervention
from sweep.interventions.patch import Patch
from sweep.interventions.specs import AtPSpec, PatchSpec
from sweep.metrics import evaluate
from sweep.models.sae import attached

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns


class AtP(Estimator):
    KIND = "atp"
    SPEC = AtPSpec
    READS = "other"

    @property
    def direction(self) -> str:
        return getattr(self.spec, "direction", "denoise")

    @property
    def exact(self) -> Intervention:
        return Patch(PatchSpec(direction=self.direction))

    def prepare(self, ctx: Context) -> None:
        self.model = ctx.model
        self.hooks = ctx.hooks
        self.metrics = ctx.metrics

    def prepare_block(self, block: BlockRuns) -> None:
        block.extras["atp"] = self._products(block, self.metrics)

    def estimate(self, c: Component, layer: int, block: BlockRuns) -> torch.Tensor:
        return per_cell(c, block.extras["atp"][c.hook_name(layer)])

    def _products(self, block: BlockRuns, metrics: tuple[str, ...]) -> dict[str, torch.Tensor]:
        with torch.inference_mode(False):
            # The cached runs are inference tensors, which autograd may not save: copies
            # made outside inference mode are ordinary tensors.
            at, answer, wrong = (t.clone() for t in (block.read_pos, block.answer, block.wrong))
            clean = block.clean_logits.clone()

            def metric(logits: torch.Tensor) -> torch.Tensor:
                return evaluate(metrics, at_reads(logits, at), answer, wrong, clean)

            tokens = block.tokens(self.base_run).clone()
            return attributions(self.model, tokens, set(self.hooks), block.source, metric)


def attributions(
    model: Any,
    tokens: torch.Tensor,
    hooks: set[str],
    source: dict[str, torch.Tensor],
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

    saes = attached(model)
    latents = {h: h.removesuffix(SAE_SUFFIX) for h in hooks if h.endswith(SAE_SUFFIX)}
    names = sorted({*(hooks - set(latents)), *latents.values()})
    with torch.enable_grad(), model.hooks(fwd_hooks=[(h, keeper(h)) for h in names]):
        values = metric(model(tokens))
        out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        for row in values:
            grads = torch.autograd.grad(row.sum(), [acts[h] for h in names], retain_graph=True)
            grad = dict(zip(names, grads, strict=True))
            for h in hooks:
                if h in latents:  # through the decoder: (source - base) . d metric / d latent
                    x, sae = acts[latents[h]].detach(), saes[latents[h]]
                    delta = source[h] - sae.encode_kept(x)
                    out[h].append((delta * sae.latent_grad(grad[latents[h]], x)).detach())
                else:
                    out[h].append(((source[h] - acts[h].detach()) * grad[h]).detach())
    return {h: torch.stack(v) for h, v in out.items()}
