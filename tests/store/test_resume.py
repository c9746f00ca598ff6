"""A sweep killed with SIGKILL finishes when the same command runs again, with equal values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweep
from sweep.store.status import done_marks
from tests.helpers import kill_part_way

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
    seen: list = []  # sweep.status of the store while the sweep writes it

    def look(done: np.ndarray) -> None:
        if not seen and (done > 0).any():
            seen.append(sweep.status(str(killed)))

    args = [*OVERRIDES, f"store.path={killed}", "runner.progress=false"]
    first = kill_part_way(args, tmp_path, killed, 2, each=look)
    live = seen[0] if seen else None
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
