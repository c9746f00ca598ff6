"""A sweep killed with SIGKILL finishes when the same command runs again, with equal values."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweep
from sweep.store.status import done_marks
from tests.zygote import python_popen

OVERRIDES = [
    "model=native",
    "model.native.n_layers=4",
    "task=ioi",
    "task.n_prompts=6",
    "grid.components=[z_by_pos,resid_pre,mlp_out]",
    "store.chunk_kb=1",  # one layer per unit
    "store.prompt_block=2",  # three prompt blocks
    "runner.memory_mb=1.5",  # two cells per forward, so units take a while
]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    killed = tmp_path / "killed.zarr"
    log = tmp_path / "sweep.log"
    proc = python_popen(["sweep", *OVERRIDES, f"store.path={killed}", "runner.progress=false"],
                        tmp_path, log=log)  # fmt: skip
    deadline = time.monotonic() + 180
    live = None  # sweep.status of the store while the sweep writes it
    try:
        while (done := done_marks(killed)).size == 0 or (done > 0).sum() < done.size // 2:
            if live is None and (done > 0).any():
                live = sweep.status(str(killed))
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the sweep never finished a unit"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = done_marks(killed)
    n_first = int((first == 1).sum())
    assert len(first) // 2 <= n_first < len(first), f"killed too late: {n_first} of {len(first)}"
    assert live is not None and live.holder is not None  # the running driver, named
    assert 0 < live.cell_prompts[0] < live.cell_prompts[1]

    summary = sweep.run_config(
        sweep.compose_config([*OVERRIDES, f"store.path={killed}", "runner.progress=false"])
    )
    second = done_marks(killed)
    assert summary.units_run == len(first) - n_first
    assert summary.run_number == 2
    # Units done by the killed run were not recomputed; every other unit was, once.
    assert np.array_equal(second[first == 1], first[first == 1])
    assert (second[first == 0] == 2).all()

    fresh = sweep.run(
        [*OVERRIDES, f"store.path={tmp_path / 'fresh.zarr'}", "runner.progress=false"]
    )
    a, b = xr.open_zarr(killed).load(), xr.open_zarr(fresh).load()
    padding = (a["pos"] >= a["prompt_length"]).values  # [pos, prompt]: NaN by design
    for name in ["z_by_pos", "resid_pre", "mlp_out"]:
        missing = a[name].isnull().any([d for d in a[name].dims if d not in ("pos", "prompt")])
        assert np.array_equal(missing.transpose("pos", "prompt").values, padding)
        np.testing.assert_array_equal(a[name].values, b[name].values)  # NaN == NaN here
    for name in ["clean_baseline", "corrupted_baseline"]:
        np.testing.assert_array_equal(a[name].values, b[name].values)
