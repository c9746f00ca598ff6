"""A Ray cluster of three nodes on this machine (a head and two worker nodes, each its own
raylet): workers spread one per node, a worker node lost half way is survived, and a lost
node with no room left elsewhere stops in one line that the same command resumes from.

The driver runs as ``python -m sweep runner=ray runner.address=...``, as on a cluster."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import file_hashes

import sweep
from sweep.store.status import done_marks
from tests.zygote import python_m, python_popen

SLOW = [
    "model=native", "model.native.n_layers=4", "task=ioi", "task.n_prompts=8",
    "grid.components=[z_by_pos,resid_pre]", "store.chunk_kb=1", "store.prompt_block=2",
    "runner.memory_mb=1.5", "runner.progress=false", "store.plots=false",
]  # fmt: skip


class Nodes:
    """The three-node cluster of ``ray_nodes.py``, run in a process of its own."""

    def __init__(self, gpus: int, log: Path, *python: str) -> None:
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent / "ray_nodes.py"), str(gpus), *python],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV,
            )  # fmt: skip
        self.address = self.proc.stdout.readline().strip()
        assert self.address, log.read_text()[-3000:]

    def remove(self, i: int) -> None:
        """Worker node ``i`` leaves the cluster, its raylet gone."""
        self.proc.stdin.write(f"remove {i}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "removed"

    def stop(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self.proc.stdout.close()


@pytest.fixture
def three_nodes(request, tmp_path: Path):
    """A head and two worker nodes, one CPU each (``gpus``: one fake GPU each as well)."""
    nodes = Nodes(getattr(request, "param", 0), tmp_path / "nodes.log")
    yield nodes
    nodes.stop()


ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")},
    "HF_HUB_OFFLINE": "1",
}


def _sweep(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return python_m(["sweep", *args], tmp, ENV)


def _drive(
    args: list[str], tmp: Path, lose, when: float
) -> tuple[subprocess.CompletedProcess, int]:
    """Run the driver; call ``lose(driver)`` once ``when`` of the units are done. Returns
    the finished process and the units done before the loss."""
    store = Path(next(a for a in args if a.startswith("store.path=")).split("=", 1)[1])
    proc = python_popen(["sweep", *args], tmp, ENV)
    deadline, before = time.monotonic() + 300, -1
    while proc.poll() is None and time.monotonic() < deadline:
        done = done_marks(store)
        if before < 0 and done.size and (done > 0).mean() >= when:
            before = int((done > 0).sum())
            lose(proc)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), before


@pytest.mark.slow
def test_a_worker_node_lost_half_way_is_survived(three_nodes, tmp_path: Path) -> None:
    nodes = three_nodes
    path = tmp_path / "nodes.zarr"
    args = [*SLOW, "runner=ray", f"runner.address={nodes.address}", f"store.path={path}"]
    done, before = _drive(args, tmp_path, lambda _: nodes.remove(0), 0.3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0 < before < len(done_marks(path)), "the node was lost too late"
    assert "Traceback" not in done.stderr
    units = re.search(r"on 3 worker\(s\) on nodes (.*), (\d+) replaced \((\d+) lost", done.stdout)
    assert units, done.stdout
    assert int(units.group(2)) >= 1 and int(units.group(3)) == 1
    local = sweep.run([*SLOW, f"store.path={tmp_path / 'local.zarr'}"])
    a, b = xr.open_zarr(path).load(), xr.open_zarr(local).load()
    for name in ("z_by_pos", "resid_pre"):  # one torch thread per worker here, two locally
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_drivers_node_lost_the_same_command_resumes(tmp_path: Path) -> None:
    """The head node, with the driver on it, gone at once (the driver killed without a
    chance to clean up, the cluster with it): the same command on the cluster started
    again keeps every unit written and finishes equal to a local run."""
    path = tmp_path / "head.zarr"
    nodes = Nodes(0, tmp_path / "nodes.log")
    args = [*SLOW, "runner=ray", f"store.path={path}"]
    try:
        cut, before = _drive([*args, f"runner.address={nodes.address}"], tmp_path,
                             lambda driver: driver.kill(), 0.3)  # fmt: skip
    finally:
        nodes.stop()
    assert cut.returncode == -9 and before > 0
    kept = done_marks(path)
    assert (kept > 0).sum() < len(kept), "the driver finished before it was lost"
    nodes = Nodes(0, tmp_path / "again.log")
    try:
        again = _sweep([*args, f"runner.address={nodes.address}"], tmp_path)
    finally:
        nodes.stop()
    assert again.returncode == 0, again.stderr[-2000:]
    after = done_marks(path)
    assert np.array_equal(after[kept > 0], kept[kept > 0]) and (after > 0).all()
    local = sweep.run([*SLOW, f"store.path={tmp_path / 'local.zarr'}"])
    a, b = xr.open_zarr(path).load(), xr.open_zarr(local).load()
    for name in ("z_by_pos", "resid_pre"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_workers_spread_one_per_node_with_their_nodes_threads(three_nodes, tmp_path) -> None:
    args = [*SLOW[:4], "grid.components=[resid_pre]", "runner.progress=false",
            "store.plots=false", "runner=ray", f"runner.address={three_nodes.address}",
            f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    out = _sweep(args, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    nodes = re.search(
        r"on 3 worker\(s\) on nodes ([^,]+), ([^,]+), ([^,]+), 0 replaced", out.stdout
    )
    assert nodes and len(set(nodes.groups())) == 3, out.stdout  # one worker on each node
    assert out.stdout.count(": 1 torch threads") == 3, out.stdout  # each node's own CPU


@pytest.mark.slow
@pytest.mark.parametrize("three_nodes", [1], indirect=True)
def test_a_lost_node_with_no_room_elsewhere_stops_in_one_line_and_resumes(
    three_nodes, tmp_path: Path
) -> None:
    """One (fake) GPU per node, a worker on each: a lost node's worker has nowhere to go."""
    path = tmp_path / "gpus.zarr"
    args = [*SLOW, "runner=ray", f"runner.address={three_nodes.address}", f"store.path={path}"]
    done, before = _drive(args, tmp_path, lambda _: three_nodes.remove(1), 0.3)
    lines = [x for x in done.stderr.splitlines() if x.startswith("patchsweep: error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "no live node has room" in lines[0] and "run the same command again" in lines[0]
    assert "Traceback" not in done.stderr
    kept = done_marks(path)
    assert before <= (kept > 0).sum() < len(kept)
    again = _sweep(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "on 2 worker(s)" in again.stdout  # the two GPUs left
    after = done_marks(path)
    assert np.array_equal(after[kept > 0], kept[kept > 0]) and (after > 0).all()


@pytest.mark.slow
def test_nodes_that_never_join_are_one_line_before_any_unit(three_nodes, tmp_path) -> None:
    """``runner.min_nodes`` (the SLURM scripts set the job's node count): a node that cannot
    reach the head is one line naming the key, and nothing is computed."""
    path = tmp_path / "s.zarr"
    args = [*SLOW, "runner=ray", f"runner.address={three_nodes.address}", f"store.path={path}",
            "runner.min_nodes=4", "runner.node_timeout_s=3"]  # fmt: skip
    out = _sweep(args, tmp_path)
    lines = [x for x in out.stderr.splitlines() if x.startswith("patchsweep: error:")]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "runner.min_nodes: 3 of 4 nodes joined the Ray cluster" in lines[0]
    assert "Traceback" not in out.stderr
    assert not (done_marks(path) > 0).any()


@pytest.mark.slow
def test_a_node_without_patchsweep_is_one_line_and_the_store_untouched(tmp_path: Path) -> None:
    """A worker node whose Python environment has Ray, torch and the rest but not
    patchsweep (a cluster started from an image without it): one line that says to install
    it on every node, and an existing store is left as it was."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    site = next(bare.glob("lib/python3*/site-packages"))
    # The test environment's packages, without their .pth files (patchsweep's editable
    # install is one): the same Ray and Python versions, no patchsweep.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    path = tmp_path / "s.zarr"
    sweep.run([*SLOW[:4], "grid.components=[resid_pre]", "store.plots=false",
               f"store.path={path}"])  # fmt: skip
    before = file_hashes(path)
    nodes = Nodes(0, tmp_path / "nodes.log", str(bare / "bin" / "python"))
    try:
        args = [*SLOW[:4], "grid.components=[resid_pre]", "runner.progress=false",
                "store.plots=false", "runner=ray", f"runner.address={nodes.address}",
                f"store.path={path}"]  # fmt: skip
        out = _sweep(args, tmp_path)
    finally:
        nodes.stop()
    lines = [x for x in out.stderr.splitlines() if x.startswith("patchsweep: error:")]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "cannot import patchsweep" in lines[0] and "on every node" in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    after = file_hashes(path)
    after.pop("_patchsweep/lease.lock")  # the lease's lock file, left empty when released
    assert after == before
