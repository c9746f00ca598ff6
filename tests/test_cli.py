"""The command line: the default sweep, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


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
def test_multirun_gives_each_job_its_own_store_and_resumes(tmp_path: Path) -> None:
    args = ["-m", "model=native", "task=ioi", "task.n_prompts=2", "model.native.n_layers=1,2"]
    args += ["grid.components=[resid_pre]", "store.plots=false", "runner.progress=false"]
    out = _cli(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    stores = sorted((tmp_path / "outputs").glob("sweep-*.zarr"))
    assert [s.name for s in stores] == [
        f"sweep-grid.components=_resid_pre_,model.native.n_layers={n},model=native,"
        "task.n_prompts=2,task=ioi.zarr"
        for n in (1, 2)
    ]
    assert [xr.open_zarr(s).sizes["layer"] for s in stores] == [1, 2]
    again = _cli(tmp_path, *args)  # the same command finds the same stores: nothing to do
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("units: 0 computed this run") == 2


def test_multirun_store_names_keep_urls_and_directories() -> None:
    from sweep.cli import tagged

    assert tagged("outputs/sweep.zarr", "a=1") == "outputs/sweep-a=1.zarr"
    assert tagged("s3://bucket/runs/sweep.zarr", "a=1") == "s3://bucket/runs/sweep-a=1.zarr"
    assert tagged("store", "a=1") == "store-a=1"
