"""One runner test suite, run against the in-process runner and the Ray runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import ioi_rows, native_prompts, write_task
from tl_reference import reference as tl_reference

import sweep
from sweep.components import COMPONENTS
from sweep.config import to_spec
from sweep.models import load_model

RUNNERS = {"local": ["runner=local"], "ray": ["runner=ray"]}


@pytest.fixture(params=list(RUNNERS))
def runner_args(request) -> list[str]:
    if request.param == "ray":
        request.getfixturevalue("ray_session")  # shared Ray, two (fake) GPUs: two workers
    return [*RUNNERS[request.param], "runner.progress=false"]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("runners") / "task.jsonl", ioi_rows(3))


@pytest.fixture(scope="module")
def reference(task: Path) -> dict[str, np.ndarray]:
    spec = to_spec(sweep.compose_config(_grid(task)))
    return tl_reference(load_model(spec.model), task)


def _grid(task: Path) -> list[str]:
    return [
        *native_prompts(task),
        f"grid.components=[{','.join(COMPONENTS)}]",
        "store.chunk_kb=1",  # one unit per layer: several units per component
        "runner.memory_mb=1",
    ]


def test_every_component_equals_transformerlens(runner_args, task, reference, tmp_path) -> None:
    summary = sweep.run_config(
        sweep.compose_config([*_grid(task), *runner_args, f"store.path={tmp_path / 's.zarr'}"])
    )
    assert summary.units_run == summary.units_total > len(COMPONENTS)
    ds = sweep.open_results(summary.path)
    for name in COMPONENTS:
        got = ds[name].sel(metric="logit_diff").values
        np.testing.assert_allclose(got, reference[name], atol=1e-4, rtol=0, err_msg=name)


def test_resumes_a_store_left_by_a_crash(runner_args, task, tmp_path) -> None:
    """A crash leaves units written but not marked done, or not written at all."""
    path = tmp_path / "s.zarr"
    sweep.run([*_grid(task), "runner=local", "runner.progress=false", f"store.path={path}"])
    before = sweep.open_results(path).load()
    group = zarr.open_group(str(path), mode="r+")
    done = group["_patchsweep/done"]
    table = np.asarray(group["_patchsweep/units"][:])  # component, layers, prompts per unit
    done[[0, 9, 17]] = 0  # killed between the chunk write and the done mark
    names = list(COMPONENTS)
    for name in ("resid_mid", "q"):  # killed before the chunk write
        unit = int(np.flatnonzero(table[:, 0] == names.index(name))[-1])
        _, l0, l1, p0, p1 = table[unit]
        region = (slice(None), slice(l0, l1), ..., slice(p0, p1))
        group[name][region] = np.nan
        done[unit] = 0
    summary = sweep.run_config(
        sweep.compose_config([*_grid(task), *runner_args, f"store.path={path}"])
    )
    assert summary.units_run == 5 and summary.run_number == 2
    assert (np.asarray(done[:]) > 0).all()
    after = sweep.open_results(path).load()
    for name in COMPONENTS:
        np.testing.assert_allclose(after[name].values, before[name].values, atol=1e-5, rtol=0)


def test_ablations_and_atp_verification_run_alike(runner_args, task, tmp_path) -> None:
    """Resampling (several samples) and AtP's exact top cells give the local runner's values."""
    grid = [
        *native_prompts(task),
        "grid.components=[resid_pre,z]",
        "runner.memory_mb=1",
    ]
    runs = {
        "resample": ["intervention=resample", "intervention.samples=2"],
        "atp": ["intervention=atp", "intervention.verify_top_k=3"],
    }
    for name, extra in runs.items():
        got = sweep.open_results(
            sweep.run([*grid, *extra, *runner_args, f"store.path={tmp_path / name}"])
        ).load()
        local = [*grid, *extra, "runner=local", "runner.progress=false"]
        want = sweep.open_results(sweep.run([*local, f"store.path={tmp_path / (name + 'L')}"]))
        for var in got.data_vars:
            np.testing.assert_allclose(got[var], want[var], atol=1e-5, err_msg=f"{name} {var}")
    assert (
        int(got["resid_pre_exact"].notnull().any("prompt").sum())
        + int(got["z_exact"].notnull().any("prompt").sum())
        == 3
    )


def test_each_prompt_blocks_runs_are_built_about_once(runner_args, task, tmp_path) -> None:
    """Units of a block go to the worker that holds its runs (Ray), or come one block after
    another (in-process): the runs of each block are built about once."""
    grid = [*native_prompts(task), "grid.components=[resid_pre,z,mlp_out]", "store.chunk_kb=1",
            "store.prompt_block=1"]  # fmt: skip
    summary = sweep.run_config(
        sweep.compose_config([*grid, *runner_args, f"store.path={tmp_path / 's.zarr'}"])
    )
    blocks = 3  # 3 prompts, one per block
    assert len(summary.cache_builds) == summary.workers
    assert blocks <= sum(summary.cache_builds) <= blocks + summary.workers - 1
