"""The command line: the default sweep, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.mark.slow
def test_default_command_runs_offline_and_reports(tmp_path: Path) -> None:
    out = _cli(tmp_path)
    assert out.returncode == 0, out.stderr
    store = tmp_path / "outputs" / "sweep.zarr"
    assert f"store: {store}" in out.stdout
    assert "top cells by |value - corrupted baseline|" in out.stdout
    ds = xr.open_zarr(store)
    assert set(ds.attrs["components"]) == {"resid_pre", "attn_out", "mlp_out", "z"}
    assert ds["z"].notnull().all() and ds.sizes["prompt"] == 16
    # The reported baselines are the stored ones.
    clean = float(ds["clean_baseline"].mean())
    assert f"clean {clean:.3f}" in out.stdout
    assert np.isfinite(clean)


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
