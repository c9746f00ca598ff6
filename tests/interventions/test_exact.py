"""Exact patching of single cells (AtP's verification, ``Runner.exact``) under every
intervention equals the same cells of a full sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ioi_rows, native_prompts, worker, write_task

from sweep.components import get_component
from sweep.plan import ExactJob, WorkUnit

KINDS = {
    "patch": [],
    "zero": [],
    "mean": [],
    "resample": ["intervention.samples=2"],
    "atp": [],
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_exact_cells_equal_the_sweep(tmp_path: Path, kind: str) -> None:
    """The bug: under zero/mean/resample ``exact`` read the corrupted run's cache, which
    ablations leave empty."""
    task = write_task(tmp_path / "task.jsonl", ioi_rows(4))
    base = [*native_prompts(task), "grid.components=[resid_pre,z]", "runner.memory_mb=1"]
    w = worker([*base, f"intervention={kind}", *KINDS[kind]])
    # AtP's exact cells are patching in its direction: the reference is a patching sweep.
    reference = worker([*base, "intervention=patch"]) if kind == "atp" else w
    n = w.task.n_prompts
    for name in ("resid_pre", "z"):
        c = get_component(name)
        unit = WorkUnit(0, name, 0, (1,), w.axes.of(c), 0, n)
        full = reference.run(unit).values.reshape(1, -1, n)  # [metric, cell, prompt]
        picks = [0, 3, len(unit.cells) - 1]
        cells = tuple(unit.cells[i] for i in picks)
        got = w.exact(ExactJob(name, 1, cells, 0, n))
        np.testing.assert_allclose(got, full[:, picks], atol=1e-5, err_msg=f"{kind} {name}")
    if kind in ("zero", "mean", "resample"):  # not the corrupted run's activations
        patch = worker([*base, "intervention=patch"])
        unit = WorkUnit(0, "resid_pre", 0, (1,), w.axes.of(get_component("resid_pre")), 0, n)
        assert np.abs(w.run(unit).values - patch.run(unit).values).max() > 1e-3
