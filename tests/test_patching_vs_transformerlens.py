"""Stored values equal transformer_lens.patching's own functions, for every component."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import transformer_lens.patching as tlp
from transformer_lens.model_bridge import TransformerBridge

import sweep
from sweep.components import COMPONENTS
from sweep.models import load_model
from sweep.spec import SweepSpec
from sweep.tasks import read_prompts

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


def test_every_component_has_a_reference() -> None:
    assert set(TL_FUNCTIONS) == set(COMPONENTS)


def _reference(model: TransformerBridge, task: Path) -> dict[str, np.ndarray]:
    """TL's per-prompt results, [layer, (pos), (head), prompt], for every component."""
    rows = read_prompts(str(task))
    clean = model.to_tokens([r.clean for r in rows])
    corrupted = model.to_tokens([r.corrupted for r in rows])
    assert clean.shape == corrupted.shape
    answer = torch.tensor([model.to_single_token(r.answer) for r in rows])
    wrong = torch.tensor([model.to_single_token(r.wrong) for r in rows])
    idx = torch.arange(len(rows))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[idx, -1, answer] - logits[idx, -1, wrong]

    _, clean_cache = model.run_with_cache(clean)
    out = {}
    for name, fn in TL_FUNCTIONS.items():
        with torch.no_grad():
            res = fn(model, corrupted, clean_cache, metric, reduce="none")
        out[name] = res.values.cpu().numpy()
    return out


@pytest.fixture(
    scope="module",
    params=["native/fast", "native/hooks", "gpt2/fast", "gpt2-compat/fast", "gpt2-compat/hooks"],
)
def swept(request, gpt2_dir, tmp_path_factory):
    """One sweep over every component, plus TL's reference on an independently loaded model.

    ``fast`` is the suffix forward (it raises rather than fall back), ``hooks`` the model's
    own hooked forward from the patched layer.
    """
    tmp = tmp_path_factory.mktemp("tl")
    from conftest import ioi_rows, write_task

    name, engine = request.param.split("/")
    task = write_task(tmp / "task.jsonl", ioi_rows(4))
    model_args = ["model.name=native", "model.native.n_layers=3"]
    if name.startswith("gpt2"):
        model_args = [f"model.name={gpt2_dir}", f"model.compat={name.endswith('compat')}"]
    overrides = [
        *model_args,
        "task=prompts",
        f"task.path={task}",
        f"grid.components=[{','.join(COMPONENTS)}]",
        f"store.path={tmp / 'store.zarr'}",
        "runner.progress=false",
        "runner.memory_mb=1",  # several forwards per layer
        f"runner.engine={engine}",
    ]
    path = sweep.run(overrides)
    if name.startswith("gpt2"):
        model = TransformerBridge.boot_transformers(str(gpt2_dir))
        if name.endswith("compat"):
            model.enable_compatibility_mode()
        model.eval()
    else:
        model = load_model(SweepSpec.from_config(sweep.compose_config(overrides)).model)
    return sweep.open_results(path), _reference(model, task)


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_component_equals_transformerlens(swept, component: str) -> None:
    ds, ref = swept
    got = ds[component].sel(metric="logit_diff").values
    assert got.shape == ref[component].shape
    assert not np.isnan(got).any()
    # The mean over prompts (what TL returns by default) and every prompt on its own.
    np.testing.assert_allclose(got.mean(-1), ref[component].mean(-1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, ref[component], atol=1e-4, rtol=0)
    # Guard against a vacuous pass: patching must move the metric somewhere.
    base = ds["corrupted_baseline"].sel(metric="logit_diff").values
    assert np.abs(got - base).max() > 1e-3
