"""TransformerLens' own patching functions: the independent reference for patching results."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformer_lens.patching as tlp
from transformer_lens.model_bridge import TransformerBridge

from sweep.tasks.prompts import read_prompts

# TransformerLens' own sweep function for each component (resid_post has no named
# wrapper, so it goes through TL's generic_activation_patch with TL's own setter).
TL_FUNCTIONS = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "resid_mid": tlp.get_act_patch_resid_mid,
    "resid_post": partial(
        tlp.generic_activation_patch,
        patch_setter=tlp.layer_pos_patch_setter,
        activation_name="resid_post",
        index_axis_names=("layer", "pos"),
    ),
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "z": tlp.get_act_patch_attn_head_out_all_pos,
    "q": tlp.get_act_patch_attn_head_q_all_pos,
    "k": tlp.get_act_patch_attn_head_k_all_pos,
    "v": tlp.get_act_patch_attn_head_v_all_pos,
    "z_by_pos": tlp.get_act_patch_attn_head_out_by_pos,
    "q_by_pos": tlp.get_act_patch_attn_head_q_by_pos,
    "k_by_pos": tlp.get_act_patch_attn_head_k_by_pos,
    "v_by_pos": tlp.get_act_patch_attn_head_v_by_pos,
    "pattern": tlp.get_act_patch_attn_head_pattern_all_pos,
}


def reference(
    model: TransformerBridge, task: Path, direction: str = "denoise"
) -> dict[str, np.ndarray]:
    """TL's per-prompt results, [layer, (pos), (head), prompt], for every component the
    model has (noising: clean and corrupted swapped)."""
    rows = read_prompts(str(task))
    clean = model.to_tokens([r.clean for r in rows])
    corrupted = model.to_tokens([r.corrupted for r in rows])
    assert clean.shape == corrupted.shape
    answer = torch.tensor([model.to_single_token(r.answer) for r in rows])
    wrong = torch.tensor([model.to_single_token(r.wrong) for r in rows])
    idx = torch.arange(len(rows))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[idx, -1, answer] - logits[idx, -1, wrong]

    if direction == "noise":
        clean, corrupted = corrupted, clean
    _, clean_cache = model.run_with_cache(clean)
    out = {}
    for name, fn in TL_FUNCTIONS.items():
        if f"blocks.0.hook_{name}" not in model.hook_dict and name.startswith("resid_mid"):
            continue  # parallel attention and MLP: no resid_mid
        with torch.no_grad():
            res = fn(model, corrupted, clean_cache, metric, reduce="none")
        out[name] = res.values.cpu().numpy()
    return out
