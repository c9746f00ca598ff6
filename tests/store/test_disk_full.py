"""A disk that fills mid-sweep: one line naming the path and what is left, then a resume
that is equal to a sweep that never met a full disk. Needs a real small filesystem (a
320 KB tmpfs: the new store and 6 of its 24 units fit), so it runs where the tests may
mount one (root in a container that allows it)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweep.store.status import done_marks
from tests.zygote import python_m

ARGS = [
    "model=native",
    "task=ioi",
    "task.n_prompts=16",
    "grid.components=[resid_pre,attn_out,z]",
    "store.chunk_kb=1",
    "store.prompt_block=2",
    "store.plots=false",
    "runner.progress=false",
]


def _mount(where: Path, size: str, remount: bool = False) -> bool:
    opts = f"remount,size={size}" if remount else f"size={size}"
    cmd = (
        ["mount", "-o", opts, str(where)]
        if remount
        else ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)]
    )
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _sweep(cwd: Path, store: Path) -> subprocess.CompletedProcess[str]:
    return python_m(["sweep", *ARGS, f"store.path={store}"], cwd)


def _done(store: Path) -> int:
    return int((done_marks(store) > 0).sum())


@pytest.fixture
def small_disk(tmp_path: Path):
    where = tmp_path / "small"
    where.mkdir()
    if not _mount(where, "320k"):
        pytest.skip("cannot mount a tmpfs here (needs root and a container that allows it)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_ends_in_one_line_and_the_same_command_resumes_equal(
    tmp_path: Path, small_disk: Path
) -> None:
    mine = small_disk / "notes.txt"
    mine.write_text("a researcher's notes, next to the store\n")
    before = hashlib.sha256(mine.read_bytes()).hexdigest()
    store = small_disk / "s.zarr"

    full = _sweep(tmp_path, store)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1, full.stderr
    line = lines[0]
    assert "Traceback" not in full.stderr and "HYDRA_FULL_ERROR" not in full.stderr
    assert f"under store.path {store} is full" in line, line
    assert "B more (" in line and "run the same command to resume" in line, line
    written = _done(store)
    assert 0 < written, line
    assert f"{written} of " in line, line

    assert _mount(small_disk, "4m", remount=True)
    resumed = _sweep(tmp_path, store)
    assert resumed.returncode == 0, resumed.stderr

    reference = tmp_path / "ref.zarr"
    assert _sweep(tmp_path, reference).returncode == 0
    a, b = xr.open_zarr(store), xr.open_zarr(reference)
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == before
