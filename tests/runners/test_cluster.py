"""Cluster submission: a real Ray head on 127.0.0.1 with token authentication, sweeps sent
through the Ray Jobs API (`ray job submit`), and the files in cluster/ checked."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import sweep
from sweep.store.status import done_marks

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
SWEEP = [
    "model=native",
    "model.native.n_layers=4",
    "task=ioi",
    "task.n_prompts=6",
    "grid.components=[resid_pre,z_by_pos]",
    "store.chunk_kb=1",  # one unit per layer
    "store.plots=false",
    "runner.progress=false",
]


@dataclass(frozen=True)
class Head:
    address: str
    env: dict[str, str]
    tmp: Path

    def job(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> str:
        out = subprocess.run(
            [RAY, "job", args[0], "--address", self.address, *args[1:]],
            env=env or self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"ray job {args[0]} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout + out.stderr

    def submit(self, job_id: str, store: Path, *extra: str, wait: bool = True) -> str:
        cmd = [sys.executable, "-m", "sweep", *SWEEP, *extra, f"store.path={store}"]
        cmd += ["runner=ray", "runner.address=auto", "runner.num_workers=1"]
        flags = ["--submission-id", job_id] + ([] if wait else ["--no-wait"])
        return self.job("submit", *flags, "--", *cmd)


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    """A Ray head of our own: loopback, own ports and temporary directory, token auth on.
    Stopped at the end by killing its process tree only (``ray stop`` would kill every
    Ray on the machine)."""
    pytest.importorskip("ray.dashboard.modules.job", reason="needs patchsweep[cluster]")
    psutil = pytest.importorskip("psutil")
    tmp = tmp_path_factory.mktemp("head")
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    workers = 40000 + secrets.randbelow(5000)
    avoid = range(workers, workers + 101)  # Ray refuses a port inside the workers' range

    def _free_port() -> int:
        return next(p for p in iter(_any_free_port, None) if p not in avoid)

    dashboard = _free_port()
    temp_dir = tmp / "ray"
    args = [
        RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={_free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
        f"--min-worker-port={workers}", f"--max-worker-port={workers + 100}",
        "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    log = (tmp / "head.log").open("w")
    proc = subprocess.Popen(
        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    h = Head(f"http://127.0.0.1:{dashboard}", env, tmp)
    try:
        _wait_ready(h, proc)
        yield h
    finally:
        _stop(psutil, proc, temp_dir)
        log.close()


def _stop(psutil, proc: subprocess.Popen, temp_dir: Path) -> None:
    """Terminate the head's process tree and anything naming its temp dir, until none is
    left (a raylet may still be starting workers while it goes down); what is still there
    after 5 s is killed."""
    deadline, polite = time.monotonic() + 60, True
    while True:
        tree = {proc.pid, *(c.pid for c in _children(psutil, proc.pid))}
        tree |= {p.pid for p in psutil.process_iter(["cmdline"]) if _mentions(p, temp_dir)}
        procs = [p for p in (_alive(psutil, pid) for pid in tree) if p is not None]
        if not procs:
            break
        assert time.monotonic() < deadline, "processes of the test head outlived it"
        for p in procs:
            try:
                p.terminate() if polite else p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
        polite = False
    proc.wait(timeout=30)


def _alive(psutil, pid: int):
    try:
        p = psutil.Process(pid)
        return None if p.status() == psutil.STATUS_ZOMBIE else p
    except psutil.NoSuchProcess:
        return None


def _children(psutil, pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _mentions(p, temp_dir: Path) -> bool:
    return any(str(temp_dir) in part for part in (p.info.get("cmdline") or []))


def _wait_ready(h: Head, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((h.tmp / "head.log").read_text())
        try:
            h.job("list", timeout=30)
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            time.sleep(2)
    raise RuntimeError("the test Ray head did not start:\n" + (h.tmp / "head.log").read_text())


def _local(tmp: Path, name: str, *extra: str) -> dict[str, np.ndarray]:
    args = [*SWEEP, *extra, "runner=local", f"store.path={tmp / name}"]
    ds = sweep.open_results(sweep.run(args))
    return {v: ds[v].values for v in ("resid_pre", "z_by_pos")}


def _assert_same(store: Path, want: dict[str, np.ndarray]) -> None:
    ds = sweep.open_results(store)
    for name, values in want.items():
        np.testing.assert_allclose(ds[name].values, values, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_submitted_sweep_equals_the_local_runner(head: Head, tmp_path: Path) -> None:
    out = head.submit("sweep-once", tmp_path / "job.zarr")
    assert "succeeded" in out
    assert "fast engine" in out  # the sweep's own summary, printed by the job
    _assert_same(tmp_path / "job.zarr", _local(tmp_path, "local.zarr"))


@pytest.mark.slow
def test_stopped_job_resumes_when_submitted_again(head: Head, tmp_path: Path) -> None:
    store = tmp_path / "job.zarr"
    # A wider model through the hooked forward: each unit takes a second or more, so the
    # stop lands half way.
    slow = ["runner.engine=hooks", "model.native.d_model=256", "model.native.d_head=64",
            "model.native.d_mlp=1024", "store.prompt_block=1"]  # fmt: skip
    head.submit("sweep-stopped", store, *slow, wait=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = done_marks(store)
        if 0 < int((done > 0).sum()) < len(done):
            break
        time.sleep(0.2)
    head.job("stop", "sweep-stopped")
    _wait_status(head, "sweep-stopped", "STOPPED")
    before = done_marks(store)
    assert 0 < int((before > 0).sum()) < len(before)
    out = head.submit("sweep-resumed", store, *slow)
    assert "succeeded" in out
    after = done_marks(store)
    assert after.size and (after > 0).all()
    # The second job computed only what the first had not: earlier units keep run 1.
    np.testing.assert_array_equal(after[before > 0], before[before > 0])
    assert set(np.unique(after)) == {1, 2}
    _assert_same(store, _local(tmp_path, "local.zarr", *slow))


def _wait_status(head: Head, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if status.lower() in head.job("status", job_id).lower():
            return
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach {status}: {head.job('status', job_id)}")


@pytest.mark.slow
def test_job_without_the_token_is_refused(head: Head, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')"
    for env in (
        head.env | {"RAY_AUTH_TOKEN": "not-the-token"},
        {k: v for k, v in head.env.items() if k not in ("RAY_AUTH_TOKEN_PATH",)}
        | {"HOME": str(tmp_path)},  # no token at all (and none in ~/.ray)
    ):
        with pytest.raises(RuntimeError, match="(?i)authentication"):
            head.job("submit", "--", sys.executable, "-c", code, env=env)
    assert str(marker) not in head.job("list")  # refused at submission: no job was made
    assert not marker.exists()


SCRIPTS = sorted((ROOT / "cluster" / "slurm").glob("*.sbatch"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sbatch_scripts_parse_and_run_the_sweep(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)
    text = script.read_text()
    assert "python -m sweep runner=ray" in text and '"$@"' in text  # overrides pass through
    assert "RAY_AUTH_MODE=token" in text and "--dashboard-host=127.0.0.1" in text


def test_cluster_manifests_parse_and_run_the_sweep() -> None:
    job = yaml.safe_load((ROOT / "cluster" / "k8s" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("python -m sweep runner=ray runner.address=auto")
    containers = [
        c
        for group in [job["spec"]["rayClusterSpec"]["headGroupSpec"]]
        + job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        for c in group["template"]["spec"]["containers"]
    ]
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    launcher = yaml.safe_load((ROOT / "cluster" / "ray" / "cluster.yaml").read_text())
    head_cmd = " ".join(launcher["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_cmd and "--dashboard-host=127.0.0.1" in head_cmd
    assert "RAY_AUTH_MODE=token" in " ".join(launcher["worker_start_ray_commands"])
    readme = (ROOT / "cluster" / "README.md").read_text()
    assert readme.count("python -m sweep") >= 3
