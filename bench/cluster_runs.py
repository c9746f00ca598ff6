"""One sweep run seven ways, side by side: in-process to a local store (the reference), on a
three-node Ray cluster, on that cluster with a worker node lost half way, with
``cluster/slurm/sweep.sbatch`` on a real two-node SLURM (once through, and ``scancel`` half
way then ``sbatch`` again), to an S3 store (a real S3 API server on 127.0.0.1: moto's), and
to that S3 store killed half way and run again.

    python bench/cluster_runs.py [--layers 4 --prompts 16]

Each row is the driver's wall time as a user sees it (``python -m sweep ...``, model
loading included), its ratio to the in-process run, the units computed again (a lost
worker's units in flight, sent to another worker; for the killed run, units the first run
had written that the second wrote again: none, since the second computes exactly the units
the first left undone), and the largest difference from the reference's values. The cluster
is ``ray.cluster_utils.Cluster``: a head and two worker nodes on this machine, one CPU
each, each its own raylet; a lost node is removed with its raylet.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import sweep
from sweep.store.status import done_marks

HERE = Path(__file__).resolve().parent
COMPONENTS = ("z_by_pos", "resid_pre")


def _grid(args: argparse.Namespace) -> list[str]:
    return [
        "model=native", "task=ioi", f"model.native.n_layers={args.layers}",
        f"task.n_prompts={args.prompts}", f"grid.components=[{','.join(COMPONENTS)}]",
        "store.chunk_kb=1", "store.prompt_block=4", "runner.memory_mb=2",
        "runner.progress=false", "store.plots=false",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    """``python -m sweep`` as a user runs it; ``watch(done)`` is called while it runs with
    the store's done marks, and may act once (lose a node, kill the driver)."""

    def __init__(self, grid: list[str], store: str, env: dict[str, str], cwd: Path) -> None:
        self.args = [sys.executable, "-m", "sweep", *grid, f"store.path={store}"]
        self.store, self.env, self.cwd = store, env, cwd

    def __call__(self, *extra: str, at: float | None = None, act=None) -> tuple[float, str]:
        start = time.perf_counter()
        proc = subprocess.Popen([*self.args, *extra], cwd=self.cwd, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        while at is not None and proc.poll() is None:
            done = done_marks(self.store)
            if done.size and (done > 0).mean() >= at:
                act(proc)
                break
            time.sleep(0.05)
        out, _ = proc.communicate()
        return time.perf_counter() - start, out


def _requeued(out: str) -> int:
    found = re.search(r"(\d+) unit\(s\) sent again", out)
    return int(found.group(1)) if found else 0


def _computed(out: str) -> int:
    found = re.search(r"units: (\d+) computed this run", out)
    assert found, out
    return int(found.group(1))


def _max_diff(store: str, reference: dict[str, np.ndarray]) -> float:
    ds = sweep.open_results(store)
    return max(float(np.nanmax(np.abs(ds[c].values - v))) for c, v in reference.items())


def _slurm_rows(grid: list[str], tmp: Path, env: dict[str, str], reference) -> list:
    """cluster/slurm/sweep.sbatch on a real two-node SLURM started here (the tests'), once
    through, and cancelled half way then submitted again."""
    sys.path.insert(0, str(HERE.parent / "tests" / "runners"))
    from slurm_cluster import SlurmCluster, missing

    if (why := missing()) is not None:
        print(f"SLURM rows left out: {why}")
        return []
    slurm = SlurmCluster(tmp / "slurm").start()
    token = tmp / "slurm" / "token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    slurm.env = {k: v for k, v in slurm.env.items() if not k.startswith("RAY_")}
    slurm.env |= env | {"RAY_AUTH_TOKEN_PATH": str(token), "PATCHSWEEP_VENV": sys.prefix}
    script = str(HERE.parent / "cluster" / "slurm" / "sweep.sbatch")
    sweep_args = [a for a in grid if a != "store.plots=false"]  # the script sets it

    def submit(store: str, *flags: str) -> str:
        cpu_only = ["--gpus-per-node=0", "--cpus-per-task=1", f"--chdir={tmp}"]
        out = slurm.run("sbatch", "--parsable", *cpu_only, *flags, script, *sweep_args,
                        f"store.path={store}")  # fmt: skip
        return out.stdout.strip().split(";")[0]

    rows = []
    try:
        store = str(tmp / "slurm-once.zarr")
        start = time.perf_counter()
        job = submit(store, "--wait")
        seconds = time.perf_counter() - start
        assert "on 2 worker(s) on nodes" in (tmp / f"patchsweep-{job}.out").read_text()
        rows.append(("SLURM, 2 nodes (sbatch)", seconds, 0, _max_diff(store, reference)))
        store = str(tmp / "slurm-cancelled.zarr")
        start = time.perf_counter()
        job = submit(store)
        while (done := done_marks(store)).size == 0 or (done > 0).mean() < 0.5:
            time.sleep(0.05)
        slurm.run("scancel", job)
        slurm.wait_gone(job)
        before = done_marks(store)
        submit(store, "--wait")
        seconds = time.perf_counter() - start
        after = done_marks(store)
        again = int((after[before > 0] != before[before > 0]).sum())
        rows.append(("SLURM, scancel half way + sbatch again", seconds, again,
                     _max_diff(store, reference)))  # fmt: skip
    finally:
        slurm.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompts", type=int, default=16)
    args = p.parse_args()
    grid = _grid(args)
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env["HF_HUB_OFFLINE"] = "1"
    rows: list[tuple[str, float, int, float]] = []

    seconds, out = Run(grid, str(tmp / "local.zarr"), env, tmp)()
    local = sweep.open_results(tmp / "local.zarr")
    reference = {c: local[c].values for c in COMPONENTS}
    units = _computed(out)
    rows.append(("in-process, local store", seconds, 0, 0.0))

    for lose in (False, True):
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 1, "include_dashboard": False})  # fmt: skip
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        try:
            store = str(tmp / f"ray-{lose}.zarr")
            run = Run(grid, store, env, tmp)
            ray_args = ("runner=ray", f"runner.address={cluster.address}")
            if lose:
                seconds, out = run(
                    *ray_args, at=0.5, act=lambda _, c=cluster, w=workers[0]: c.remove_node(w)
                )
            else:
                seconds, out = run(*ray_args)
            assert "3 worker(s) on nodes" in out, out
            label = "Ray, 3 nodes, one lost half way" if lose else "Ray, 3 nodes"
            rows.append((label, seconds, _requeued(out), _max_diff(store, reference)))
        finally:
            cluster.shutdown()

    rows += _slurm_rows(grid, tmp, env, reference)

    port = _free_port()
    server = subprocess.Popen([sys.executable, str(HERE.parent / "tests" / "s3_server.py"),
                               str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    s3 = env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    os.environ.update(s3)
    try:
        time.sleep(3)
        import fsspec

        fsspec.filesystem("s3").mkdir("bench")
        url = "s3://bench/once.zarr"
        seconds, out = Run(grid, url, s3, tmp)()
        rows.append(("in-process, S3 store", seconds, 0, _max_diff(url, reference)))
        url = "s3://bench/killed.zarr"
        run = Run(grid, url, s3, tmp)
        first, _ = run(at=0.5, act=lambda proc: proc.send_signal(signal.SIGKILL))
        before = done_marks(url)
        second, out = run()
        assert _computed(out) == int((before == 0).sum()), out
        after = done_marks(url)
        again = int((after[before > 0] != before[before > 0]).sum())  # written twice: none
        rows.append(("S3 store, killed half way + again", first + second, again,
                     _max_diff(url, reference)))  # fmt: skip
    finally:
        server.terminate()

    print(f"sweep: native {args.layers} layers, {args.prompts} prompts, "
          f"{'+'.join(COMPONENTS)}, {units} units; {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'run':<40}{'wall s':>8}{'vs local':>10}{'units again':>13}{'max |diff|':>12}")
    for label, seconds, again, diff in rows:
        ratio = seconds / rows[0][1]
        print(f"{label:<40}{seconds:>8.1f}{ratio:>9.2f}x{again:>13}{diff:>12.1e}")


if __name__ == "__main__":
    main()
