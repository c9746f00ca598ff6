"""The suffix forwards of the model families people study, against TransformerLens'
own patching functions: every component, both directions, per prompt, on small random
checkpoints of Llama (grouped-query), Mistral (sliding window), Qwen2 (q/k/v biases),
Gemma 2 (extra norms, soft-capping, alternating sliding window), GPT-NeoX (partial
rotary, parallel attention and MLP) and GPT-J (interleaved partial rotary), each loaded
from a directory like a user's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BOS_ADDED, FAMILIES
from helpers import ioi_rows, mixed_rows, one_forward_per_cell, worker, write_task
from tl_reference import reference
from transformer_lens.model_bridge import TransformerBridge

import sweep
from sweep.components import COMPONENTS
from tests.helpers import padded

FORWARDS = {"llama": "LlamaForward", "mistral": "LlamaForward", "qwen2": "LlamaForward",
            "gemma2": "Gemma2Forward", "neox": "NeoXForward", "gptj": "GPTJForward"}  # fmt: skip
PARALLEL = {"neox", "gptj"}


def _components(name: str) -> list[str]:
    """All 14, but resid_mid where attention and MLP run in parallel (it does not exist)."""
    return [c for c in COMPONENTS if not (name in PARALLEL and c == "resid_mid")]


@pytest.fixture(scope="module", params=[f"{f}/{d}" for f in FAMILIES for d in ("denoise", "noise")])
def swept(request, family_dir, tmp_path_factory):
    name, direction = request.param.split("/")
    tmp = tmp_path_factory.mktemp(name)
    task = write_task(tmp / "task.jsonl", ioi_rows(4))
    model_dir = family_dir(name)
    path = sweep.run([
        "model=hf", f"model.name={model_dir}", "task=prompts", f"task.path={task}",
        f"grid.components=[{','.join(_components(name))}]", f"intervention.direction={direction}",
        "runner.engine=fast",  # the family's suffix forward, or an error: never a fallback
        "runner.memory_mb=2", f"store.path={tmp / 's.zarr'}", "runner.progress=false",
    ])  # fmt: skip
    model = TransformerBridge.boot_transformers(str(model_dir)).eval()
    return name, direction, sweep.open_results(path).load(), reference(model, task, direction)


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_family_equals_transformerlens(swept, component: str) -> None:
    name, direction, ds, ref = swept
    if component not in _components(name):
        assert component not in ds
        return
    if name == "gptj" and component == "pattern":
        # TransformerLens' GPT-J bridge computes attention without its pattern hook, so a
        # pattern patched there changes nothing (its values equal the base run): no
        # reference to compare with.
        assert np.allclose(ref[component], _base(ds, direction)[None, None], atol=1e-5)
        return
    got = ds[component].sel(metric="logit_diff").values
    assert got.shape == ref[component].shape, (ds[component].dims, ref[component].shape)
    np.testing.assert_allclose(got, ref[component], atol=1e-4, rtol=0, err_msg=component)
    assert np.abs(got - _base(ds, direction)).max() > 1e-3, "patching moved nothing"


def _base(ds, direction: str) -> np.ndarray:
    run = "corrupted" if direction == "denoise" else "clean"
    return ds[f"{run}_baseline"].sel(metric="logit_diff").values


def test_grouped_query_keys_and_values_have_a_kv_head_axis(swept) -> None:
    name, _, ds, _ = swept
    grouped = name not in PARALLEL  # the NeoX and GPT-J checkpoints have no grouping
    n_kv = 2 if grouped else 4
    for c in ("k", "v", "k_by_pos", "v_by_pos"):
        dim = "kv_head" if grouped else "head"
        assert dim in ds[c].dims and ds.sizes[dim] == n_kv, ds[c].dims
    assert ds.sizes["head"] == 4 and "head" in ds["q"].dims


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_family_forward_is_chosen_and_bos_lines_up(
    name: str, family_dir, tmp_path: Path
) -> None:
    """Tokenizers that add a BOS themselves and those that do not: position 0 is BOS where
    the model expects one, and the answer is the token after the prompt either way."""
    from sweep.config import to_spec
    from sweep.engine.worker import Worker

    task = write_task(tmp_path / "task.jsonl", ioi_rows(2))
    w = Worker(to_spec(sweep.compose_config([
        "model=hf", f"model.name={family_dir(name)}", "task=prompts", f"task.path={task}",
        "grid.components=[resid_pre]",
    ])))  # fmt: skip
    assert type(w.forward).__name__ == FORWARDS[name]
    model = w.model
    text = ioi_rows(2)[0]["clean"]
    want = model.to_tokens(text)[0]  # TransformerLens' own tokenization of the prompt
    got = padded(w.task)[0][0, : int(w.task.lengths[0])]
    assert got.tolist() == want.tolist()
    bos = model.tokenizer.bos_token_id
    assert (int(got[0]) == bos) == (name in BOS_ADDED or bool(model.cfg.default_prepend_bos))
    logits = model(want[None])[0, -1]
    answer = int(w.task.answer[0])
    assert answer == model.to_single_token(ioi_rows(2)[0]["answer"])
    assert torch.isfinite(logits[answer])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_equals_one_forward_per_cell_on_prompts_of_three_lengths(
    name: str, family_dir, tmp_path: Path
) -> None:
    """Prompts of different lengths (so positions past the end of shorter ones are NaN,
    and the sliding windows cut different keys), against one full unbatched forward per
    cell and prompt."""
    task = write_task(tmp_path / "task.jsonl", mixed_rows())
    args = ["model=hf", f"model.name={family_dir(name)}", "task=prompts", f"task.path={task}",
            "runner.engine=fast", "runner.memory_mb=2", "runner.progress=false"]  # fmt: skip
    w = worker([*args, "grid.components=[resid_pre]"])
    lengths = sorted({int(n) for n in w.task.lengths})
    positions = sorted({0, 1, 4, *(n - 1 for n in lengths)})
    names = [c for c in _components(name) if not (name == "gptj" and c == "pattern")]
    spots = f"grid.positions=[{','.join(map(str, positions))}]"
    grid = f"grid.components=[{','.join(names)}]"
    ds = sweep.open_results(sweep.run([*args, grid, spots, f"store.path={tmp_path / 's'}"]))
    with torch.no_grad():
        for c in names:
            want = one_forward_per_cell(w, c, positions)
            got = ds[c].sel(metric="logit_diff").values
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=c)
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"{name} {c}")
