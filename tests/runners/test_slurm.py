"""cluster/slurm/*.sbatch submitted with ``sbatch`` as a user would, on a real two-node SLURM
started on this machine (``slurm_cluster.py``): a Ray head on one node and a worker on the
other, the sweep's driver on the head, a store equal to an in-process run; ``scancel`` half
way and ``sbatch`` again resumes it, computing only the units the first job left undone.

Both nodes share this host's address, as no real cluster's do; the scripts start the head
and the workers by node rank (not by address) and give every node's agents ports of their
own, so the same script runs here and on a real cluster.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep.store.status import done_marks

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import SlurmCluster, missing  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = ["--gpus-per-node=0", "--cpus-per-task=1"]
"""What a CPU-only cluster sets on the sbatch line (the scripts' headers ask for GPUs)."""
SWEEP = [
    "model=native", "model.native.n_layers=4", "task=ioi", "task.n_prompts=8",
    "grid.components=[z_by_pos,resid_pre]", "store.chunk_kb=1", "store.prompt_block=2",
    "runner.memory_mb=1.5", "runner.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    if (why := missing()) is not None:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as e:
        cluster.stop()
        pytest.skip(f"SLURM could not start here: {str(e)[:500]}")
    token = cluster.dir / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    cluster.env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_")}
    cluster.env |= {"RAY_AUTH_TOKEN_PATH": str(token), "PATCHSWEEP_VENV": sys.prefix,
                    "HF_HUB_OFFLINE": "1"}  # fmt: skip
    yield cluster
    cluster.stop()


def _sbatch(slurm: SlurmCluster, script: str, tmp: Path, store: Path, *flags: str) -> str:
    """Submit; with ``--wait``, returns when the job has ended. Returns the job id."""
    out = slurm.run("sbatch", "--parsable", *CPU_ONLY, f"--chdir={tmp}", *flags,
                    str(ROOT / "cluster" / "slurm" / script), *SWEEP, f"store.path={store}",
                    check=False, timeout=600)  # fmt: skip
    job = out.stdout.strip().split(";")[0]
    assert out.returncode == 0, f"{out.stdout}{out.stderr}{_output(tmp, job)}"
    return job


def _output(tmp: Path, job: str) -> str:
    f = tmp / f"patchsweep-{job}.out"
    return f.read_text(errors="replace") if f.exists() else ""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The same sweep in this process: what every job's store must equal (run once)."""
    store = tmp_path_factory.mktemp("local") / "l.zarr"
    ds = sweep.open_results(sweep.run([*SWEEP, "store.plots=false", f"store.path={store}"]))
    return {c: ds[c].values for c in ("z_by_pos", "resid_pre")}


def _assert_equal(store: Path, want: dict[str, np.ndarray]) -> None:
    ds = sweep.open_results(store)
    for name, values in want.items():  # one torch thread per worker here, two locally
        np.testing.assert_allclose(ds[name].values, values, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["sweep.sbatch", "sweep-shared-nodes.sbatch"])
def test_sbatch_runs_the_sweep_across_both_nodes(
    slurm: SlurmCluster, local: dict[str, np.ndarray], tmp_path: Path, script: str
) -> None:
    store = tmp_path / "s.zarr"
    job = _sbatch(slurm, script, tmp_path, store, "--wait")
    text = _output(tmp_path, job)
    nodes = re.search(r"on 2 worker\(s\) on nodes ([^,]+), ([^,]+), 0 replaced", text)
    assert nodes and nodes.group(1) != nodes.group(2), text[-3000:]  # one on each node
    units = re.search(r"units: (\d+) computed this run, (\d+) in the sweep", text)
    assert units and units.group(1) == units.group(2), text[-3000:]
    _assert_equal(store, local)
    slurm.wait_gone(job)
    leftover = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if f"ray-root-{job}".encode() in _read(p)]  # fmt: skip
    assert not leftover, "the job's Ray outlived it"


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_scancel_half_way_then_sbatch_again_resumes(
    slurm: SlurmCluster, local: dict[str, np.ndarray], tmp_path: Path
) -> None:
    store = tmp_path / "s.zarr"
    job = _sbatch(slurm, "sweep.sbatch", tmp_path, store)
    deadline = time.monotonic() + 300
    while (done := done_marks(store)).size == 0 or (done > 0).mean() < 0.3:
        assert time.monotonic() < deadline, _output(tmp_path, job)[-3000:]
        assert slurm.run("squeue", "-h", "-j", job, check=False).stdout.strip(), (
            "the job ended before it was cancelled:\n" + _output(tmp_path, job)[-3000:]
        )
        time.sleep(0.1)
    slurm.run("scancel", job)
    slurm.wait_gone(job)
    before = done_marks(store)
    assert 0 < int((before > 0).sum()) < len(before), "cancelled too late"

    again = _sbatch(slurm, "sweep.sbatch", tmp_path, store, "--wait")
    text = _output(tmp_path, again)
    after = done_marks(store)
    assert (after > 0).all()
    np.testing.assert_array_equal(after[before > 0], before[before > 0])  # kept, not redone
    left = int((before == 0).sum())
    assert f"units: {left} computed this run, {len(before)} in the sweep" in text, text[-3000:]
    _assert_equal(store, local)
    assert os.path.exists(store / "_patchsweep") and not (store / "_patchsweep/lease.json").exists()
