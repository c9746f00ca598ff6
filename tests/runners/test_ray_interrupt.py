"""Ctrl-C at any moment of a Ray sweep: while Ray starts, while workers load the model,
mid-run, as the workers shut down, while pictures are drawn. Each ends in exit 130 and one
line, and no Ray process of the sweep is left 10 s later."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from sweep.store.status import done_marks
from tests.runners.test_ray import SLOW_GRID
from tests.zygote import python_popen

ARGS = [*SLOW_GRID, "runner=ray", "runner.num_workers=2", "store.path=s.zarr"]
RAY = re.compile(r"ray::|/ray/|raylet|gcs_server")
RAY_NOTICE = "Token authentication is enabled"  # Ray's own line at ray.init


def _ray_processes() -> set[psutil.Process]:
    out = set()
    for p in psutil.process_iter(["cmdline"]):
        if RAY.search(" ".join(p.info["cmdline"] or [])):
            out.add(p)
    return out


def _family(pid: int) -> set[psutil.Process]:
    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return set()


def _done(store: Path) -> tuple[int, int]:
    done = done_marks(store)
    return int((done > 0).sum()), len(done) or -1


def _starting(pid: int, tmp: Path) -> bool:
    return any("gcs_server" in " ".join(p.cmdline()) for p in _family(pid) if p.is_running())


def _loading(pid: int, tmp: Path) -> bool:
    return any(p.name().startswith("ray::_RayWorker") for p in _family(pid) if p.is_running())


def _mid_run(pid: int, tmp: Path) -> bool:
    return _done(tmp / "s.zarr")[0] >= 1


def _finishing(pid: int, tmp: Path) -> bool:
    done, total = _done(tmp / "s.zarr")
    return done == total


def _drawing(pid: int, tmp: Path) -> bool:
    return (tmp / "s.plots").is_dir()


MOMENTS: dict[str, tuple[Callable[[int, Path], bool], str]] = {
    "ray starting": (_starting, "interrupted before the store was created; nothing was written"),
    "workers loading": (_loading, "interrupted before the store was created"),
    "mid-run": (_mid_run, "units done; run the same command to resume"),
    "workers stopping": (_finishing, "interrupted"),
    "pictures": (_drawing, "interrupted after the sweep: "),
}


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["driver", "terminal"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_at_any_moment_of_a_ray_sweep(tmp_path: Path, moment: str, group: bool) -> None:
    """``group`` sends SIGINT to the whole process group, as a terminal's Ctrl-C does (Ray's
    own processes get it too); otherwise to the driver alone, as ``kill -INT`` does."""
    when, says = MOMENTS[moment]
    before = _ray_processes()
    proc = python_popen(["sweep", *ARGS], tmp_path, {**os.environ, "HF_HUB_OFFLINE": "1"},
                        new_session=True)  # fmt: skip
    seen: set[psutil.Process] = set()
    deadline = time.monotonic() + 240
    while not when(proc.pid, tmp_path):
        assert proc.poll() is None, f"ended before {moment}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {moment}"
        seen |= _family(proc.pid)
        time.sleep(0.02)
    seen |= _family(proc.pid)
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip() and RAY_NOTICE not in x]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("patchsweep: error: interrupted"), err
    assert says in lines[0], lines[0]
    if moment == "pictures":
        assert "s.zarr is complete; draw its pictures with python -m sweep.plot" in lines[0]
    gone = time.monotonic() + 10
    while (left := _left(seen, before)) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not left, [" ".join(p.cmdline())[:120] for p in left]


def _left(seen: set[psutil.Process], before: set[psutil.Process]) -> set[psutil.Process]:
    """This sweep's Ray processes still alive (zombies have ended; their parent reaps)."""
    out = set()
    for p in (seen | _ray_processes()) - before:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.add(p)
        except psutil.NoSuchProcess:
            pass
    return out
