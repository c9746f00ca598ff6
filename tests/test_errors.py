"""Every bad input gets one readable message that says what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sweep
from sweep.errors import ConfigError, StoreError, StoreMismatchError, TaskError
from tests.helpers import padded


def _run(tmp_path: Path, *overrides: str, model: str = "native") -> Path:
    base = [f"model={model}", "task=ioi", f"store.path={tmp_path / 'out.zarr'}"]
    return sweep.run([*base, "runner.progress=false", *overrides])


def _task(tmp_path: Path, rows: list[dict]) -> str:
    from helpers import write_task

    return str(write_task(tmp_path / "task.jsonl", rows))


def test_unknown_component(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"grid.components: unknown component 'attn_in'.*resid_pre"
    ):
        _run(tmp_path, "grid.components=[attn_in]")


def test_token_counts_differ_names_the_line(tmp_path: Path) -> None:
    from helpers import ioi_rows

    rows = ioi_rows(3)
    rows[1]["corrupted"] = rows[1]["corrupted"] + " again and again"
    task = _task(tmp_path, rows)
    msg = r"task.jsonl:2: clean prompt is 15 tokens but corrupted is \d+; they must have the same"
    with pytest.raises(TaskError, match=msg):
        _run(tmp_path, "task=prompts", f"task.path={task}")


def test_answer_of_several_tokens(tmp_path: Path) -> None:
    from helpers import ioi_rows

    rows = ioi_rows(2)
    rows[0]["answer"] = " Maryanne Smithson"
    task = _task(tmp_path, rows)
    msg = (r"metric.names: logit_diff compares the answer and wrong tokens at one position, "
           r"but .*task.jsonl:1: answer ' Maryanne Smithson' is \d+ tokens")  # fmt: skip
    with pytest.raises(ConfigError, match=msg):
        _run(tmp_path, "task=prompts", f"task.path={task}")


def test_missing_task_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task.path: no such file: .*nope.jsonl"):
        _run(tmp_path, "task=prompts", f"task.path={tmp_path / 'nope.jsonl'}")


def test_task_path_not_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task.path: missing"):
        _run(tmp_path, "task=prompts")


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "task.jsonl"
    path.write_text(
        json.dumps({"clean": "a", "corrupted": "b", "answer": " c", "wrong": " d"}) + "\n{oops\n"
    )
    with pytest.raises(TaskError, match=r"task.jsonl:2: not valid JSON"):
        _run(tmp_path, "task=prompts", f"task.path={path}")


def test_missing_field(tmp_path: Path) -> None:
    task = _task(tmp_path, [{"clean": "a", "corrupted": "b", "answer": " c"}])
    with pytest.raises(TaskError, match=r"task.jsonl:1: missing or empty string field\(s\): wrong"):
        _run(tmp_path, "task=prompts", f"task.path={task}")


def test_layer_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"grid.layers: \[5\] out of range; there are 2 layers \(0..1\)"
    ):
        _run(tmp_path, "grid.layers=[0,5]")


def test_head_and_position_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grid.heads: \[4\] out of range; there are 4 heads"):
        _run(tmp_path, "grid.heads=[4]")
    with pytest.raises(ConfigError, match=r"grid.positions: \[-100\] out of range"):
        _run(tmp_path, "grid.positions=[-100]")


def test_store_from_another_config_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, "task.n_prompts=2", "grid.components=[resid_pre]")
    with pytest.raises(
        StoreMismatchError, match=r"task.n_prompts: store has 2, this run has 3"
    ) as e:
        _run(tmp_path, "task.n_prompts=3", "grid.components=[resid_pre]")
    assert "store.overwrite=true" in str(e.value)
    # The refused store is untouched and still resumable with its own config.
    assert sweep.open_results(tmp_path / "out.zarr").sizes["prompt"] == 2
    # With the explicit flag it is replaced.
    _run(tmp_path, "task.n_prompts=3", "grid.components=[resid_pre]", "store.overwrite=true")
    assert sweep.open_results(tmp_path / "out.zarr").sizes["prompt"] == 3


def test_store_path_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="is not a patchsweep store"):
        _run(tmp_path)
    assert (tmp_path / "out.zarr" / "notes.txt").read_text() == "mine"


def test_unknown_key_fails_at_composition() -> None:
    with pytest.raises(ConfigError, match=r"^grid\.colour: no such key; see every key with"):
        sweep.compose_config(["grid.colour=red"])


def test_wrong_type_fails_at_composition() -> None:
    with pytest.raises(ConfigError, match=r"^task\.n_prompts: ") as e:
        sweep.compose_config(["task.n_prompts=many"])
    assert "\n" not in str(e.value)  # one line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("intervention.direction=sideways", r"intervention.direction: 'sideways' is not one of"),
        ("metric.names=[accuracy]", r"metric.names: unknown metric 'accuracy'"),
        ("model.dtype=float8", r"model.dtype: 'float8' is not one of"),
        ("store.chunk_kb=0", r"store.chunk_kb: must be a positive integer"),
        ("grid.layers=[]", r"grid.layers: empty list"),
    ],
)
def test_bad_values_fail_before_the_model_loads(override: str, message: str) -> None:
    from sweep.config import to_spec

    with pytest.raises(ConfigError, match=message):
        to_spec(sweep.compose_config([override]))


def test_local_dir_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no config.json"):
        _run(tmp_path, f"model.name={tmp_path}", model="hf")


def test_hub_id_that_cannot_be_fetched_offline(tmp_path: Path) -> None:
    """Tests run with HF_HUB_OFFLINE=1 (conftest), so a hub id not in the cache fails."""
    with pytest.raises(
        ConfigError, match=r"model.name: could not load 'no-such-org/no-such-model'"
    ):
        _run(tmp_path, "model.name=no-such-org/no-such-model", model="hf")


def test_keys_of_a_grouped_query_model_are_swept_per_key_value_head(tmp_path: Path) -> None:
    """Once refused; now along a ``kv_head`` axis, equal to TransformerLens' own function
    (which also sweeps the key/value heads of grouped-query models)."""
    import numpy as np
    import torch
    import transformer_lens.patching as tlp
    from helpers import ioi_rows

    from sweep.config import to_spec
    from sweep.engine.worker import Worker

    task = _task(tmp_path, ioi_rows(3))  # one template: TL needs prompts of one length
    args = ["+model.native.n_key_value_heads=2", "grid.components=[k,v_by_pos,z]",
            "task=prompts", f"task.path={task}", "grid.kv_heads=[1]"]  # fmt: skip
    ds = sweep.open_results(_run(tmp_path, *args))
    assert ds["k"].dims == ("metric", "layer", "kv_head", "prompt")
    assert ds["v_by_pos"].dims == ("metric", "layer", "pos", "kv_head", "prompt")
    assert list(ds["kv_head"].values) == [1] and ds.sizes["head"] == 4  # z: query heads
    w = Worker(to_spec(sweep.compose_config(["model=native", *args[:4]])))
    t = w.task
    rows = torch.arange(t.n_prompts)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[rows, -1, t.answer] - logits[rows, -1, t.wrong]

    clean, corrupted = padded(t)
    _, cache = w.model.run_with_cache(clean)
    with torch.no_grad():
        ref = tlp.get_act_patch_attn_head_k_all_pos(
            w.model, corrupted, cache, metric, reduce="none"
        ).values.numpy()
    assert ref.shape[1] == 2  # [layer, key/value head, prompt]
    got = ds["k"].sel(metric="logit_diff").values
    np.testing.assert_allclose(got, ref[:, [1]], atol=1e-4)
    assert np.abs(got - ds["corrupted_baseline"].sel(metric="logit_diff").values).max() > 1e-3
    with pytest.raises(ConfigError, match=r"grid.kv_heads: \[2\] out of range; there are 2"):
        _run(tmp_path, *args[:2], "grid.kv_heads=[2]", "store.path=x.zarr")
