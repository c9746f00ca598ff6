"""The batched engines against one full, unpadded forward per cell and prompt.

Prompts have different lengths, so the patched position is the first one, the last one
of each prompt, and past the end of the shorter ones (NaN), all in one batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import (
    can_reset_peak,
    in_fresh_process,
    mixed_rows,
    native_prompts,
    one_forward_per_cell,
    worker,
    write_task,
)

import sweep
from sweep.components import COMPONENTS
from sweep.engine.forward.gpt2 import GPT2Forward
from sweep.engine.forward.suffix import Rows
from sweep.engine.worker import Worker
from sweep.errors import ConfigError


def _overrides(tmp: Path, task: Path, positions: list[int], engine: str) -> list[str]:
    return [
        *native_prompts(task),
        f"grid.components=[{','.join(COMPONENTS)}]",
        f"grid.positions=[{','.join(map(str, positions))}]",
        f"store.path={tmp / engine}",
        "runner.progress=false",
        "runner.memory_mb=2",  # several forwards per layer, mixing start positions
        f"runner.engine={engine}",
    ]


@pytest.fixture(scope="module")
def variable_lengths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("engine")
    task = write_task(tmp / "task.jsonl", mixed_rows())
    w = worker(_overrides(tmp, task, [0], "hooks"))
    lengths = sorted({int(n) for n in w.task.lengths})
    assert len(lengths) == 3, "the templates must give three different lengths"
    positions = sorted({0, 1, 4, *(n - 1 for n in lengths)})
    with torch.no_grad():
        ref = {name: one_forward_per_cell(w, name, positions) for name in COMPONENTS}
    return {"tmp": tmp, "task": task, "positions": positions, "ref": ref, "lengths": lengths}


@pytest.mark.parametrize("engine", ["fast", "hooks"])
def test_engine_equals_one_forward_per_cell(variable_lengths: dict[str, Any], engine: str) -> None:
    v = variable_lengths
    path = sweep.run(_overrides(v["tmp"], v["task"], v["positions"], engine))
    ds = sweep.open_results(path)
    assert list(ds["pos"].values) == v["positions"]
    for name in COMPONENTS:
        got = ds[name].sel(metric="logit_diff").values
        ref = v["ref"][name]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=name)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=name)
    # The last position of the longest prompt is past the end of the other two.
    last = ds["resid_pre"].sel(metric="logit_diff", pos=v["lengths"][-1] - 1).values
    assert np.isnan(last).sum() == 2 * ds.sizes["layer"]


def _worker(tmp: Path, *extra: str) -> Worker:
    task = write_task(tmp / "task.jsonl", mixed_rows())
    overrides = ["model=native", "task=prompts", f"task.path={task}", "runner.progress=false"]
    overrides += extra
    return worker(overrides)


def test_rotary_model_falls_back_to_hooks(tmp_path: Path, caplog) -> None:
    rotary = "+model.native.positional_embedding_type=rotary"
    with caplog.at_level(logging.WARNING):
        assert _worker(tmp_path, rotary).forward.NAME == "hooks"
    assert "rotary" in caplog.text
    with pytest.raises(ConfigError, match=r"runner\.engine=fast: .*rotary"):
        _worker(tmp_path, rotary, "runner.engine=fast")
    assert _worker(tmp_path).forward.NAME == "fast"


def test_suffix_forward_that_differs_from_the_model_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up check compares every stage of a block with the model's hooks and
    names the first that differs: here a model whose attention scale is not 1/sqrt(d_head)."""
    init = GPT2Forward.__init__

    def other_scale(self: GPT2Forward, model: Any) -> None:
        init(self, model)
        self.scale *= 1.01

    monkeypatch.setattr(GPT2Forward, "__init__", other_scale)
    assert _worker(tmp_path).forward.NAME == "hooks"
    with pytest.raises(ConfigError, match=r"differ from the suffix forward at pattern"):
        _worker(tmp_path, "runner.engine=fast")


def test_rows_pack_each_suffix_once() -> None:
    rows = Rows.make(torch.tensor([0, 1, 0]), torch.tensor([2, 0, 4]), torch.tensor([4, 1, 4]))
    assert rows.tok_row.tolist() == [0, 0, 0, 1, 1, 2]
    assert rows.tok_pos.tolist() == [2, 3, 4, 0, 1, 4]
    assert rows.tok_prompt.tolist() == [0, 0, 0, 1, 1, 0]
    assert rows.final.tolist() == [2, 4, 5]


PEAK = """
import json, sys
from pathlib import Path
from helpers import peak_extra_mb, worker
from sweep.plan import WorkUnit
args, budget = sys.argv[1:-1], sys.argv[-1]
w = worker([*args, f"runner.memory_mb={budget}"])
n = w.task.n_prompts
unit = WorkUnit(0, "resid_pre", 0, (0,), (("pos", w.axes.coords["pos"]),), 0, n)
w.run(unit)  # warm up: one-time allocations (and the block's cached runs) are not the forward's
print(json.dumps(peak_extra_mb(lambda: w.run(unit))))
"""


@pytest.mark.skipif(not can_reset_peak(), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.parametrize("engine", ["fast", "hooks"])
def test_peak_memory_stays_within_budget(tmp_path: Path, engine: str) -> None:
    """A layer of this model's resid_pre grid needs ~100 MB in one forward; an 8 MB
    budget splits it. The large budget shows the measurement would see an overrun. Each
    is measured in a fresh process."""
    task = write_task(tmp_path / "task.jsonl", mixed_rows())
    args = [
        "model=native", "task=prompts", f"task.path={task}",
        "model.native.n_layers=2", "model.native.d_model=256", "model.native.d_head=64",
        "model.native.d_mlp=1024", "+model.native.d_vocab=50257",
        f"runner.engine={engine}", "grid.components=[resid_pre]",
    ]  # fmt: skip
    peaks = {b: in_fresh_process(PEAK, *args, str(b)) for b in (8, 512)}
    assert peaks[8] <= 8, peaks
    assert peaks[512] > 8, peaks


def test_a_model_with_a_module_in_training_mode_is_put_in_eval_mode() -> None:
    """The worker leaves a model in eval mode as it is (issue 34: ``eval()`` walks every
    module) and puts one with any module training in eval mode, that module too."""
    from sweep.engine.worker import evaluating

    model = sweep.load_model(["model=native"])
    model.eval()
    assert evaluating(model) is model
    assert not any(m.training for m in model.modules())
    model.blocks[0].train()
    evaluating(model)
    assert not any(m.training for m in model.modules())
