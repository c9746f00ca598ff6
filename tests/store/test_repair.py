"""Damaged stores are found and repaired, never trusted silently: a lost chunk file is
recomputed on resume; damaged chunk bytes are found by ``sweep.status --verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import ioi_rows, native_prompts, write_task

import sweep
from sweep.models.native import PREFIX, remove_stale_tokenizers
from sweep.store.backends import remove_leftovers
from tests.zygote import python_m


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    tmp = tmp_path_factory.mktemp("repair")
    task = write_task(tmp / "task.jsonl", ioi_rows(8))
    # z_by_pos: 15 pos x 4 heads x 8 prompts x 4 B = 1.9 KB a layer: one unit per layer;
    # resid_pre: all three layers in one unit.
    args = [*native_prompts(task), "grid.components=[z_by_pos,resid_pre]", "store.chunk_kb=1",
            "runner.progress=false"]  # fmt: skip
    return args, Path(sweep.run([*args, f"store.path={tmp / 'good.zarr'}"]))


def _copy(finished: tuple[list[str], Path], tmp: Path) -> tuple[list[str], Path]:
    args, good = finished
    path = tmp / "s.zarr"
    shutil.copytree(good, path)
    return [*args, f"store.path={path}"], path


def test_a_lost_chunk_file_is_recomputed_on_resume(finished, tmp_path: Path) -> None:
    args, path = _copy(finished, tmp_path)
    (path / "z_by_pos" / "c" / "0" / "1" / "0" / "0" / "0").unlink()  # layer 1
    summary = sweep.run_config(sweep.compose_config(args))
    assert summary.units_lost == summary.units_run == 1
    xr.testing.assert_identical(xr.open_zarr(path).load(), xr.open_zarr(finished[1]).load())


def test_verify_finds_damaged_chunk_bytes_and_the_next_run_repairs_them(
    finished, tmp_path: Path
) -> None:
    args, path = _copy(finished, tmp_path)
    chunk = path / "z_by_pos" / "c" / "0" / "2" / "0" / "0" / "0"
    chunk.write_bytes(b"\x28\xb5\x2f\xfd garbage")  # a zstd frame header, then nonsense
    status = sweep.status(str(path), verify=True)
    assert status.damaged == ["z_by_pos layers 2..2 prompts 0..7 (unit 2)"]
    out = python_m(["sweep.status", str(path)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "z_by_pos: 2 of 3 units done" in out.stdout  # marked not done
    summary = sweep.run_config(sweep.compose_config(args))
    assert summary.units_run == 1
    assert sweep.status(str(path), verify=True).damaged == []
    xr.testing.assert_identical(xr.open_zarr(path).load(), xr.open_zarr(finished[1]).load())


def test_verify_from_the_command_line_names_the_damage(finished, tmp_path: Path) -> None:
    _, path = _copy(finished, tmp_path)
    (path / "resid_pre" / "c" / "0" / "0" / "0" / "0").write_bytes(b"broken")
    out = python_m(["sweep.status", str(path), "--verify"], tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "damaged: 1 unit(s), marked not done:" in out.stdout
    assert "resid_pre layers 0..2 prompts 0..7 (unit 3)" in out.stdout
    assert "run the sweep's command again to recompute them" in out.stdout


def test_status_reports_progress_runs_and_config(finished) -> None:
    _, path = finished
    s = sweep.status(str(path))
    assert s.units_done == {"z_by_pos": (3, 3), "resid_pre": (1, 1)}
    done, total = s.cell_prompts
    assert done == total == (3 * 15 * 4 + 3 * 15) * 8  # cells x prompts
    assert [r["run"] for r in s.runs] == [1] and s.holder is None
    assert s.config["grid.components"] == ["z_by_pos", "resid_pre"]
    assert "cells x prompts: 1,800 of 1,800 done (100.0%)" in s.report()
    import sweep.status as module  # the module is callable too

    assert module(str(path)).units_done == s.units_done


def test_leftovers_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".s.zarr.tmp-{dead.pid}", tmp_path / f".s.zarr.old-{dead.pid}"]
    live = tmp_path / f".s.zarr.tmp-{subprocess.os.getpid()}"
    for d in [*stale, live]:
        d.mkdir()
    assert sorted(remove_leftovers(tmp_path, "s.zarr")) == sorted(stale)
    assert live.exists()
    tok = tmp_path / f"{PREFIX}{dead.pid}-abc"
    mine = tmp_path / f"{PREFIX}{subprocess.os.getpid()}-abc"
    tok.mkdir()
    mine.mkdir()
    assert remove_stale_tokenizers(str(tmp_path)) == [tok]
    assert mine.exists()


def test_a_crash_during_creation_leaves_a_folder_the_next_run_removes(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".s.zarr.tmp-{dead.pid}"
    left.mkdir()
    (left / "zarr.json").write_text("{}")
    sweep.run(["model=native", "task=ioi", "task.n_prompts=2", "grid.components=[resid_pre]",
               f"store.path={tmp_path / 's.zarr'}", "runner.progress=false"])  # fmt: skip
    assert not left.exists()
    assert np.asarray(zarr.open_group(str(tmp_path / "s.zarr"))["_patchsweep/done"][:]).all()


def test_status_into_a_closed_pipe_prints_no_traceback(finished) -> None:
    """``python -m sweep.status STORE | head -1``: the reader leaves early; no traceback."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before status writes a byte
    out = subprocess.run([sys.executable, "-m", "sweep.status", str(finished[1])], stdout=w,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.close(w)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.returncode == 0
