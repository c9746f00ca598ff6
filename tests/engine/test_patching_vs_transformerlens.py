"""Stored values equal transformer_lens.patching's own functions, for every component."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ioi_rows, spec_of, write_task
from tl_reference import TL_FUNCTIONS, reference
from transformer_lens.model_bridge import TransformerBridge

import sweep
from sweep.components import COMPONENTS
from sweep.models import load_model


def test_every_component_has_a_reference() -> None:
    assert set(TL_FUNCTIONS) == set(COMPONENTS)


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
    name, engine = request.param.split("/")
    task = write_task(tmp / "task.jsonl", ioi_rows(4))
    model_args = ["model=native", "model.native.n_layers=3"]
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
        model = load_model(spec_of(overrides).model)
    return sweep.open_results(path), reference(model, task)


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
