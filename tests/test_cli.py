"""The command line: the default sweep, and errors that name the key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import sweep
from tests.zygote import python_m


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return python_m(["sweep", *args], tmp_path, timeout=300)


def test_unknown_key_names_it(tmp_path: Path) -> None:
    out = _cli(tmp_path, "grid.colour=red")
    assert out.returncode != 0
    assert "grid.colour" in out.stderr
    assert not (tmp_path / "outputs" / "sweep.zarr").exists()


def test_sweep_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    out = _cli(tmp_path, "grid.components=[attn_in]")
    assert out.returncode == 2
    assert "patchsweep: error: grid.components: unknown component 'attn_in'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_run_leaves_only_its_store_and_pictures(tmp_path: Path) -> None:
    """No Hydra folder per run (outputs/DATE/TIME with .hydra and a log file): a folder
    of sweeps holds the sweeps."""
    args = ["model=native", "task=ioi", "task.n_prompts=2", "grid.components=[resid_pre]",
            "runner.progress=false", "store.path=s.zarr"]  # fmt: skip
    out = _cli(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    assert "sweep.driver][INFO] - " in out.stdout  # the log is still shown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.plots", "s.zarr"]


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_store_and_resumes(tmp_path: Path) -> None:
    """The bug: ``-m task.n_prompts=4,8 store.chunk_kb=1,1024`` refused its second job (both
    got one store name), and a fixed store.path turned per-job names off."""
    args = ["-m", "model=native", "task=ioi", "task.n_prompts=2,3", "store.chunk_kb=1,1024"]
    args += ["grid.components=[resid_pre]", "store.plots=false", "runner.progress=false"]
    args += ["store.path=runs/ioi.zarr"]
    out = _cli(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    stores = sorted((tmp_path / "runs").glob("ioi-*.zarr"))
    # Short names: the job number (Hydra's order) and the overrides that vary.
    assert [s.name for s in stores] == [
        f"ioi-{i}-store.chunk_kb={kb},task.n_prompts={n}.zarr"
        for i, (n, kb) in enumerate([(2, 1), (2, 1024), (3, 1), (3, 1024)])
    ]
    assert [xr.open_zarr(s).sizes["prompt"] for s in stores] == [2, 2, 3, 3]
    again = _cli(tmp_path, *args)  # the same command finds the same stores: nothing to do
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("units: 0 computed this run") == 4
    # Hydra's own record of a multirun, without a folder per job.
    assert {p.name for p in tmp_path.iterdir()} == {"runs", "multirun"}
    assert [p.name for p in tmp_path.glob("multirun/*/*/*")] == ["multirun.yaml"] * 2

    # The manifest lists every job and opens into one Dataset along ``job``.
    manifest = tmp_path / "runs" / "ioi-multirun.yaml"
    data = yaml.safe_load(manifest.read_text())
    assert data["varied"] == ["task.n_prompts", "store.chunk_kb"]
    assert [j["store"] for j in data["jobs"]] == [s.name for s in stores]
    assert data["jobs"][1]["overrides"] == {"task.n_prompts": "2", "store.chunk_kb": "1024"}
    ds = sweep.open_multirun(manifest)
    assert ds.sizes["job"] == 4 and ds.sizes["prompt"] == 3
    assert list(ds["task.n_prompts"].values) == ["2", "2", "3", "3"]
    for i, store in enumerate(stores):
        one = xr.open_zarr(store)["resid_pre"].values
        got = ds["resid_pre"].sel(job=i).values[..., : one.shape[-1]]
        np.testing.assert_array_equal(got, one)
        assert np.isnan(ds["resid_pre"].sel(job=i).values[..., one.shape[-1] :]).all()
    mine = tmp_path / "runs" / "mine-multirun.yaml"  # a file of the user's is never replaced
    mine.write_text("my notes\n")
    refused = _cli(tmp_path, *args[:-1], "store.path=runs/mine.zarr")
    assert refused.returncode == 2 and mine.read_text() == "my notes\n"
    assert refused.stderr.strip().startswith("patchsweep: error: store.path: ")
    assert "is not a patchsweep multirun manifest" in refused.stderr
    shutil.rmtree(stores[3])  # a job that has not run yet is left out, and named
    part = sweep.open_multirun(manifest)
    assert list(part["job"].values) == [0, 1, 2] and part.attrs["missing_jobs"] == [3]


def test_multirun_store_names_keep_urls_and_directories() -> None:
    from sweep.multirun import tagged

    assert tagged("outputs/sweep.zarr", "a=1") == "outputs/sweep-a=1.zarr"
    assert tagged("s3://bucket/runs/sweep.zarr", "a=1") == "s3://bucket/runs/sweep-a=1.zarr"
    assert tagged("store", "a=1") == "store-a=1"


def test_help_lists_groups_and_options_without_internal_schemas(tmp_path: Path) -> None:
    out = _cli(tmp_path, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("patchsweep: activation-patching")
    assert "intervention  atp, eap, mean, patch*, resample, zero" in out.stdout
    assert "base_" not in out.stdout


def test_cfg_job_shows_only_the_chosen_models_keys(tmp_path: Path) -> None:
    out = _cli(tmp_path, "--cfg", "job")
    assert out.returncode == 0 and "name: induction" in out.stdout
    assert "native" not in out.stdout.split("task:")[0]
    native = _cli(tmp_path, "model=native", "--cfg", "job")
    assert "n_layers: 2" in native.stdout


def test_a_store_is_resumed_however_its_task_path_and_device_are_spelled(tmp_path: Path) -> None:
    from helpers import ioi_rows, write_task

    write_task(tmp_path / "t.jsonl", ioi_rows(2))
    base = ["model=native", "task=prompts", "grid.components=[resid_pre]", "store.plots=false",
            "runner.progress=false", "store.path=s.zarr"]  # fmt: skip
    first = _cli(tmp_path, *base, "task.path=t.jsonl")
    assert first.returncode == 0, first.stderr
    again = _cli(tmp_path, *base, f"task.path={tmp_path / 't.jsonl'}", "model.device=cpu")
    assert again.returncode == 0, again.stderr
    assert "units: 0 computed this run" in again.stdout
    other = _cli(tmp_path, *base, "task.path=./t.jsonl", "grid.layers=[0]")
    line = other.stderr.strip()
    assert other.returncode == 2 and "\n" not in line
    assert "grid.layers: store has None, this run has [0]" in line
    assert line.index("another store.path") < line.index("store.overwrite=true")
