"""One driver at a time: real processes on a local store, and the lease's rules on an
fsspec (memory://) store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import zarr

from sweep.errors import StoreBusyError
from sweep.store.backends import backend_for
from sweep.store.lease import LEASE, Lease, read_holder
from sweep.store.status import done_marks
from tests.zygote import Forked, python_m, python_popen

SLOW = [
    "model=native",
    "model.native.n_layers=4",
    "task=ioi",
    "task.n_prompts=6",
    "grid.components=[z_by_pos,resid_pre]",
    "store.chunk_kb=1",  # one layer per unit
    "runner.memory_mb=0.01",  # one cell per forward: units take a while
    "runner.progress=false",
    "store.plots=false",
]


def _args(*extra: str) -> list[str]:
    """SLOW with ``extra``'s keys replacing its own."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [a for a in SLOW if a.split("=", 1)[0] not in keys] + list(extra)


def _start(tmp: Path, store: Path, *extra: str, log: str = "a.log") -> Forked:
    return python_popen(["sweep", *_args(*extra), f"store.path={store}"], tmp, log=tmp / log)


def _cli(tmp: Path, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return python_m(["sweep", *_args(*extra), f"store.path={store}"], tmp, timeout=300)


def _done(store: Path) -> int:
    return int((done_marks(store) > 0).sum())


def _units(store: Path) -> int:
    return int(zarr.open_group(str(store))["_patchsweep/done"].shape[0])


def _wait(cond, proc: Forked, log: Path, timeout: float = 180, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [x for x in lines if x.startswith("patchsweep: error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.mark.slow
def test_second_driver_is_refused_then_takes_over_from_a_dead_one(tmp_path: Path) -> None:
    """The first driver is stopped (SIGSTOP) once a unit is done: alive and holding the
    lease however loaded the machine is, where a sweep sized to outlast the others'
    start-up would depend on the machine's speed."""
    store = tmp_path / "s.zarr"
    a = _start(tmp_path, store)
    try:
        _wait(lambda: _done(store) >= 1, a, tmp_path / "a.log", poll=0.01)
        a.send_signal(signal.SIGSTOP)
        assert _done(store) < _units(store), "the first driver finished before it was stopped"
        b = _cli(tmp_path, store)
        line = _one_error_line(b)
        assert f"in use by another sweep (pid {a.pid} on {socket.gethostname()}, since" in line
        # Overwriting from another config is refused too, and touches nothing.
        before = _done(store)
        c = _cli(tmp_path, store, "store.overwrite=true", "task.n_prompts=5")
        assert "in use by another sweep" in _one_error_line(c)
        assert _done(store) == before and zarr.open_group(str(store))["prompt"].shape == (6,)
        assert a.poll() is None, "the first driver must still be alive"
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    held = read_holder(backend_for(str(store)))
    assert held is not None and held.pid == a.pid  # a SIGKILL leaves the lease behind
    done_by_a = _done(store)
    d = _cli(tmp_path, store)  # the holder is dead on this host: taken over
    assert d.returncode == 0, d.stderr
    assert read_holder(backend_for(str(store))) is None  # released at the end
    assert f"units: {_units(store) - done_by_a}" in d.stdout
    assert xr.open_zarr(store)["z_by_pos"].notnull().any()  # (equal values: test_resume.py)


@pytest.mark.slow
def test_two_drivers_started_at_once_on_a_new_store(tmp_path: Path) -> None:
    """The bug: the second died with a raw ``OSError: [Errno 39] Directory not empty``."""
    store = tmp_path / "s.zarr"
    procs = [_start(tmp_path, store, log=f"{i}.log") for i in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"{i}.log").read_text() for i in range(2)]
    assert sorted(codes) == [0, 2], logs
    loser = logs[codes.index(2)]
    assert "Traceback" not in loser and "Errno" not in loser
    assert "patchsweep: error: store.path:" in loser
    assert "another sweep" in loser
    assert _done(store) == zarr.open_group(str(store))["_patchsweep/done"].shape[0]
    assert not list(tmp_path.glob(".s.zarr.*"))  # no temporary directory left behind


def test_lease_rules_on_an_object_store() -> None:
    """memory:// has no rename and no pids of ours: a lease from another host is live
    until it goes unrenewed for the timeout."""
    backend = backend_for("memory://lease-test/s.zarr")
    other = {"host": "elsewhere", "pid": 1, "since": time.time(), "renewed": time.time(),
             "token": "theirs"}  # fmt: skip
    backend.write(LEASE, json.dumps(other).encode())
    with pytest.raises(StoreBusyError, match=r"in use by another sweep \(pid 1 on elsewhere"):
        Lease(backend, timeout_s=60).acquire()
    backend.write(LEASE, json.dumps({**other, "renewed": time.time() - 61}).encode())
    mine = Lease(backend, timeout_s=60)
    mine.acquire()  # not renewed for longer than the timeout: taken over
    try:
        held = read_holder(backend)
        assert held is not None and held.token == mine.me.token
        with pytest.raises(StoreBusyError):
            Lease(backend, timeout_s=60).acquire()  # and now we are the live holder
    finally:
        mine.release()
    assert read_holder(backend) is None


def test_a_driver_whose_lease_was_taken_stops_before_writing(tmp_path: Path) -> None:
    backend = backend_for(str(tmp_path / "s.zarr"))
    lease = Lease(backend, timeout_s=60)
    lease.acquire()
    try:
        lease.check()  # still ours
        other = {"host": "elsewhere", "pid": 7, "since": time.time(), "renewed": time.time(),
                 "token": "theirs"}  # fmt: skip
        backend.write(LEASE, json.dumps(other).encode())
        lease.renew()
        with pytest.raises(StoreBusyError, match=r"taken over by another sweep \(pid 7"):
            lease.check()
    finally:
        lease.release()
    assert read_holder(backend) is not None  # theirs: not removed by us


def test_a_dead_pid_on_this_host_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    backend = backend_for(str(tmp_path / "s.zarr"))
    stale = {"host": socket.gethostname(), "pid": dead.pid, "since": time.time(),
             "renewed": time.time(), "token": "old"}  # fmt: skip
    backend.create_exclusive(LEASE, json.dumps(stale).encode())
    lease = Lease(backend, timeout_s=1e9)
    lease.acquire()
    assert read_holder(backend).token == lease.me.token  # type: ignore[union-attr]
    lease.release()
    alive = {**stale, "pid": os.getpid(), "token": "me-elsewhere"}
    backend.create_exclusive(LEASE, json.dumps(alive).encode())
    with pytest.raises(StoreBusyError):
        Lease(backend, timeout_s=1e9).acquire()
