"""Prompt blocks: a task split into several blocks gives the values of one block, for every
intervention and metric; memory stays within the budget whatever the number of prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import NAMES, can_reset_peak, in_fresh_process, write_task

import sweep

TEMPLATES = [
    "When {a} and {b} went to the store, {s} gave a drink to",
    "Then {a} met {b} at the park near the old school, and later {s} handed a ball to",
]
BASE = [
    "model=native",
    "model.native.n_layers=3",
    "grid.components=[resid_pre,z,pattern]",
    "metric.names=[logit_diff,prob,kl]",
    "runner.progress=false",
    "runner.memory_mb=16",
]
KINDS = {
    "denoise": [],
    "noise": ["intervention.direction=noise"],
    "zero": ["intervention=zero"],
    "mean": ["intervention=mean"],
    "resample": ["intervention=resample", "intervention.samples=2"],
    "atp": ["intervention=atp", "intervention.verify_top_k=4", "metric.names=[logit_diff,prob]"],
}


def _task(tmp: Path) -> Path:
    """12 prompts, 6 of each of two lengths, interleaved (resampling needs a donor of the
    same length, and blocks of 5 mix lengths)."""
    rows = []
    for i in range(12):
        a, b, c, d, e = (NAMES[(i + k) % len(NAMES)] for k in range(5))
        t = TEMPLATES[i % 2]
        rows.append({"clean": t.format(a=a, b=b, s=b), "corrupted": t.format(a=c, b=d, s=e),
                     "answer": " " + a, "wrong": " " + b})  # fmt: skip
    return write_task(tmp / "task.jsonl", rows)


def _run(tmp: Path, name: str, *extra: str) -> xr.Dataset:
    task = ["task=prompts", f"task.path={_task(tmp)}"]
    return sweep.open_results(sweep.run([*BASE, *task, *extra, f"store.path={tmp / name}"])).load()


@pytest.mark.parametrize("kind", list(KINDS))
def test_three_blocks_equal_one(tmp_path: Path, kind: str) -> None:
    one = _run(tmp_path, "one", *KINDS[kind], "store.prompt_block=12")
    three = _run(tmp_path, "three", *KINDS[kind], "store.prompt_block=5")  # 5, 5, 2
    assert one.attrs["prompt_block"] == 12 and three.attrs["prompt_block"] == 5
    assert three["resid_pre"].encoding["chunks"][-1] == 5
    lengths = set(one["prompt_length"].values)
    assert len(lengths) > 1, "prompts of several lengths"
    for var in one.data_vars:
        np.testing.assert_allclose(three[var].values, one[var].values, atol=2e-5, rtol=1e-5,
                                   err_msg=f"{kind} {var}")  # fmt: skip
    for coord in ("clean_token", "corrupted_token", "prompt_length"):
        np.testing.assert_array_equal(three[coord].values, one[coord].values)


def test_a_block_larger_than_the_task_resumes(tmp_path: Path) -> None:
    """The store records the block it used (the task's 12 prompts, not the 64 asked for);
    the same command then resumes instead of being refused for a different block."""
    args = [*BASE, "grid.components=[resid_pre]", "metric.names=[logit_diff]", "task=prompts",
            f"task.path={_task(tmp_path)}", "store.prompt_block=64",
            f"store.path={tmp_path / 's'}"]  # fmt: skip
    first = sweep.open_results(sweep.run(args)).load()
    assert first.attrs["prompt_block"] == 12
    again = sweep.open_results(sweep.run(args)).load()
    xr.testing.assert_identical(again["resid_pre"], first["resid_pre"])


def test_the_store_opens_lazily_chunk_by_chunk(tmp_path: Path) -> None:
    """open_results gives dask arrays with the store's chunks (one per unit), and the
    summaries computed from them equal those of the loaded store."""
    from sweep import analysis

    path = sweep.run([*BASE, "task=prompts", f"task.path={_task(tmp_path)}",
                      "store.prompt_block=5", f"store.path={tmp_path / 's'}"])  # fmt: skip
    lazy = sweep.open_results(path)
    assert lazy["z"].chunks is not None and lazy["z"].chunks[-1] == (5, 5, 2)
    loaded = lazy.load()
    pd.testing.assert_frame_equal(  # equal up to the order of float sums
        analysis.top_cells(sweep.open_results(path), 5), analysis.top_cells(loaded, 5), rtol=1e-5
    )
    a = analysis.effect_summary(sweep.open_results(path), "z").compute()
    b = analysis.effect_summary(loaded, "z")
    xr.testing.assert_allclose(a, b)


WHOLE_WORKER = """
import json, sys
from helpers import peak_extra_mb, worker
from sweep.engine.budget import CACHE_SHARE, prompt_block
from sweep.plan import make_plan
n, budget = int(sys.argv[1]), int(sys.argv[2])
w = worker([
    "model=native", "model.native.d_model=256", "model.native.d_head=64",
    "model.native.d_mlp=1024", "+model.native.d_vocab=50257", "task=ioi",
    f"task.n_prompts={n}", "grid.components=[resid_pre,z]", "grid.layers=[0,1]",
    f"runner.memory_mb={budget}",
])
info = w.describe()
block = prompt_block(budget, info.block_bytes, info.row_bytes, n)
plan = make_plan(w.spec.grid, info.shape, info.seq_len, n, ("logit_diff",), 1, block)
w.run(plan.units[0])  # warm-up: one-time allocations are not the sweep's
peak = peak_extra_mb(lambda: [w.run(u) for u in plan.units])
print(json.dumps({"peak": peak, "block": block, "blocks": len(plan.prompt_blocks),
                  "held_ok": w.cache.held <= CACHE_SHARE * budget * 2**20}))
"""


@pytest.mark.skipif(not can_reset_peak(), reason="needs Linux /proc/self/clear_refs")
def test_the_whole_worker_stays_within_its_budget_whatever_the_number_of_prompts() -> None:
    """Cached runs of prompt blocks and the forwards over them: the worker's peak does not
    grow with the task. (A 50k vocabulary makes each forward row weigh 0.6 MB.) Each size
    in a fresh process."""
    budget = 24
    got = {n: in_fresh_process(WHOLE_WORKER, str(n), str(budget)) for n in (16, 64)}
    assert all(g["blocks"] > 1 and g["held_ok"] for g in got.values()), got
    assert max(g["peak"] for g in got.values()) <= budget, got
