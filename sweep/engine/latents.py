"""SAE latents as a component: the SAEs a worker reads with, their latents in the cached
runs, which latents ``top:N`` picks, and the patch that changes one latent.

A latent changes the model's activation through the SAE's decoder only, the error term
kept (as Marks et al. 2024 do): at the SAE's hook, ``x + (f' - f) * W_dec[latent]``
(``Sae.change``), where ``f`` is the latent in the run being patched and ``f'`` its source
(the other run's, zero, its mean, another prompt's). The latents of the cached runs live
under ``HOOK.sae_latents`` names (``sweep.components.SAE_SUFFIX``), so the interventions
read them as any other activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sweep.components import Component
from sweep.engine.cells import Batch, packed_tokens
from sweep.errors import ConfigError
from sweep.models.sae import Sae, SaeConfig, attached, check_fits
from sweep.tasks.tokenize import TokenizedTask


def load(configs: tuple[SaeConfig, ...], model: Any) -> dict[str, Sae]:
    """The SAEs on the model's device and dtype, checked against the model (one line)."""
    out = {}
    for cfg in configs:
        check_fits(cfg, int(model.cfg.n_layers), int(model.cfg.d_model))
        if cfg.hook not in model.hook_dict:
            raise ConfigError(f"sae.path: {cfg.path}: this model has no hook {cfg.hook}")
        out[cfg.hook] = Sae(cfg, model.cfg.device, next(model.parameters()).dtype)
    return out


def top_latents(model: Any, task: TokenizedTask, n: int, block: int = 16) -> tuple[int, ...]:
    """Each SAE's ``n`` latents of the highest mean activation over the tokens of the
    task's clean prompts (ties: the lower id), all SAEs' together, sorted. The BOS token
    the model puts first is left out: latents that fire on it alone are large and say
    nothing about the task. Each token's latents are summed as they are encoded
    (``Sae.encode_sum``), ``Sae.chunk`` tokens at a time, never held for a block."""
    from sweep.engine.runs import run_cached

    saes = attached(model)
    device = model.cfg.device
    totals = {hook: torch.zeros(sae.cfg.d_sae, device=device) for hook, sae in saes.items()}
    first = int(bool(model.cfg.default_prepend_bos))
    for start in range(0, task.n_prompts, block):
        prompts = np.arange(start, min(start + block, task.n_prompts))
        clean, _ = task.rows(prompts)
        lengths = torch.from_numpy(task.lengths[prompts]).to(device)
        pos = torch.arange(clean.shape[1], device=device)[None, :]
        real = (pos < lengths[:, None]) & (pos >= first)
        adders = [(h, _adder(saes[h], real, totals[h])) for h in saes]
        run_cached(model, clean.to(device), lengths, set(), adders)
    chosen: set[int] = set()
    for total in totals.values():
        order = np.lexsort((np.arange(len(total)), -total.cpu().numpy()))
        chosen.update(int(i) for i in order[:n])
    return tuple(sorted(chosen))


def _adder(
    sae: Sae, real: torch.Tensor, total: torch.Tensor
) -> Callable[[torch.Tensor, Any], None]:
    def add(act: torch.Tensor, hook: Any) -> None:
        total.add_(sae.encode_sum(act.detach()[real]))

    return add


def hook_patch(
    c: Component, src: torch.Tensor, base: torch.Tensor, b: Batch, sae: Sae
) -> Callable[[torch.Tensor, Any], Any]:
    """A TransformerLens hook at the SAE's hook (activations [rows, pos, d]): each valid
    row's latent takes the source's value at its prompt, at its position or at all. The
    batch indexes latents by their column in the cached runs (``Sae.keep``)."""
    r = torch.nonzero(b.valid).flatten()
    col, prompt = b.index["latent"][r], b.prompt[r]
    latent = sae.ids(col)
    if c.has("pos"):
        pos = b.index["pos"][r]
        df = src[prompt, pos, col] - base[prompt, pos, col]

        def at_pos(act: torch.Tensor, hook: Any) -> torch.Tensor:
            x = act[r, pos]
            act[r, pos] = x + sae.change(df, latent, x)
            return act

        return at_pos
    df = src[prompt, :, col] - base[prompt, :, col]  # [rows, pos]

    def everywhere(act: torch.Tensor, hook: Any) -> torch.Tensor:
        x = act[r]
        act[r] = x + sae.change(df, latent, x)
        return act

    return everywhere


def packed_patch(
    c: Component, src: torch.Tensor, base: torch.Tensor, b: Batch, rows: Any, sae: Sae
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same patch for the packed suffix tokens of ``rows`` ([token, d])."""
    tok, r, pos = packed_tokens(c, b, rows)
    col, prompt = b.index["latent"][r], b.prompt[r]
    latent = sae.ids(col)
    df = src[prompt, pos, col] - base[prompt, pos, col]

    def patch(act: torch.Tensor) -> torch.Tensor:
        x = act[tok]
        act[tok] = x + sae.change(df, latent, x)
        return act

    return patch
