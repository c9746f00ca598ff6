"""Ray specifics: lost workers, GPU pinning, addresses, a killed driver, no leftovers."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
import zarr

import sweep
from sweep.config import to_spec
from sweep.errors import ConfigError
from sweep.runners.ray import Node, RayRunner, placement, threads_for
from sweep.store.status import done_marks
from tests.zygote import python_popen

SLOW_GRID = [
    "model=native",
    "model.native.n_layers=4",
    "task=ioi",
    "task.n_prompts=6",
    "grid.components=[z_by_pos,resid_pre]",
    "store.chunk_kb=1",  # z_by_pos: one layer per unit
    "runner.memory_mb=0.01",  # one cell per forward, so units take a while
    "runner.progress=false",
]


def _workers() -> list[psutil.Process]:
    """Our worker actor processes (Ray titles them ray::_RayWorker...)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::_RayWorker"):
            out.append(p)
    return out


def _done_count(path: Path) -> int:
    return int((done_marks(path) > 0).sum())


def _wait_for(cond, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def local_values(tmp_path_factory) -> xr.Dataset:
    path = tmp_path_factory.mktemp("local") / "local.zarr"
    return sweep.open_results(sweep.run([*SLOW_GRID, "runner=local", f"store.path={path}"])).load()


def test_sigkill_one_worker_mid_sweep(ray_session, local_values, tmp_path) -> None:
    path = tmp_path / "ray.zarr"
    killed: list[int] = []

    def kill_one() -> None:
        _wait_for(lambda: _done_count(path) >= 1)
        victim = _workers()[0]
        killed.append(victim.pid)
        victim.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    summary = sweep.run_config(
        sweep.compose_config([*SLOW_GRID, "runner=ray", f"store.path={path}"])
    )
    killer.join(timeout=10)
    assert killed, "no worker was killed"
    assert summary.workers == 2 and summary.worker_restarts >= 1
    assert summary.units_run == summary.units_total
    got = sweep.open_results(path).load()
    for name in ("z_by_pos", "resid_pre"):
        np.testing.assert_allclose(got[name].values, local_values[name].values, atol=1e-5, rtol=0)


def test_each_worker_is_pinned_to_its_own_gpu(ray_session) -> None:
    spec = to_spec(sweep.compose_config(["runner=ray", "grid.components=[z]"]))
    runner = RayRunner(spec)  # the session Ray has two (fake) GPUs: one worker each
    try:
        devices = sorted(w["cuda_visible_devices"] for w in runner.worker_info)
        assert devices == ["0", "1"]
        assert len({w["pid"] for w in runner.worker_info}) == 2
    finally:
        runner.close()


def test_workers_are_placed_one_per_gpu_or_one_per_cpu_node() -> None:
    head, a, b = Node("n0", "10.0.0.1", 8, 0), Node("n1", "10.0.0.2", 4, 0), Node("n2", "x", 2, 0)
    assert placement(None, [head, a, b]) == [head, a, b]  # CPU-only: one per node
    assert placement(4, [head, a]) == [head, a, head, a]  # spread round-robin
    assert [threads_for(n, [head, a, head, a]) for n in (head, a)] == [4, 2]  # node's own CPUs
    g1, g2 = Node("g1", "h1", 16, 2), Node("g2", "h2", 16, 1)
    assert placement(None, [g1, g2]) == [g1, g1, g2]  # one per GPU
    assert threads_for(g1, [g1, g1, g2]) == 8 and threads_for(g2, [g1, g1, g2]) == 16
    assert placement(2, [g1, g2]) == [g1, g1]
    with pytest.raises(
        ConfigError, match="runner.num_workers: 4 workers need 4 GPUs, the cluster has 3"
    ):
        placement(4, [g1, g2])


def test_address_pointing_at_nothing_fails_fast(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"runner.address: nothing answers at 127.0.0.1:{port}"):
        sweep.run(
            ["runner=ray", f"runner.address=127.0.0.1:{port}", f"store.path={tmp_path / 's'}"]
        )
    assert time.monotonic() - start < 10
    with pytest.raises(ConfigError, match=r"runner.address: 'not an address' is not HOST:PORT"):
        sweep.run(["runner=ray", "runner.address='not an address'", f"store.path={tmp_path / 's'}"])


@pytest.mark.slow
def test_killed_driver_then_same_command_resumes(ray_session, local_values, tmp_path) -> None:
    """The driver connects to a running Ray (as on a cluster), dies, and is run again."""
    path = tmp_path / "ray.zarr"
    args = [*SLOW_GRID, "runner=ray", f"runner.address={ray_session}", f"store.path={path}"]
    driver = python_popen(["sweep", *args], tmp_path, log=tmp_path / "driver.log")
    try:
        _wait_for(lambda: _done_count(path) >= 1 or driver.poll() is not None)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    done_before = _done_count(path)
    total = zarr.open_group(str(path), mode="r")["_patchsweep/done"].shape[0]
    assert 1 <= done_before < total
    # The dead driver's workers die with it (they are owned by it).
    _wait_for(lambda: not _workers(), timeout=60)
    summary = sweep.run_config(sweep.compose_config(args))
    assert summary.units_run == total - done_before
    got = sweep.open_results(path).load()
    for name in ("z_by_pos", "resid_pre"):
        np.testing.assert_allclose(got[name].values, local_values[name].values, atol=1e-5, rtol=0)


def test_no_worker_left_behind(ray_session, tmp_path) -> None:
    sweep.run(
        [
            "runner=ray",
            "grid.components=[z]",
            "runner.progress=false",
            f"store.path={tmp_path / 's'}",
        ]
    )
    _wait_for(lambda: not _workers(), timeout=30)
