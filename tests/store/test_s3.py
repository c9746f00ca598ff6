"""The store on an object store: a real S3 API server (moto's, on 127.0.0.1) and s3fs.

A sweep into ``s3://`` is killed and resumed equal to a local run; ``sweep.status``,
``sweep.plot`` and ``sweep.open_results`` read it by URL; a second driver is refused; two
drivers that find the same stale lease race and exactly one wins (S3's ``If-Match``); a
missing bucket, missing credentials and an unreachable endpoint are one line each. The
credentials come from the AWS environment variables and are never printed or stored.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweep
import sweep.errors
from sweep.errors import StoreBusyError
from sweep.store.backends import backend_for
from sweep.store.lease import LEASE, Lease, read_holder
from sweep.store.status import done_marks
from tests.helpers import kill_part_way
from tests.zygote import python_m

pytest.importorskip("s3fs", reason="needs s3fs (pip install -e '.[dev]')")
pytest.importorskip("moto.server", reason="needs moto[server] (pip install -e '.[dev]')")

SECRET = "s3cret-" + secrets.token_hex(8)
"""The secret key the tests' server accepts; it must appear in no output and no object."""
OVERRIDES = [
    "model=native", "model.native.n_layers=4", "task=ioi", "task.n_prompts=6",
    "grid.components=[z_by_pos,resid_pre]", "store.chunk_kb=1", "store.prompt_block=2",
    "runner.memory_mb=1.5", "runner.progress=false", "store.plots=false",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running S3 API server and the AWS environment that reaches it; the server (only
    it) is stopped at the end."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("s3") / "server.log").open("wb")
    server = Path(__file__).parent.parent / "s3_server.py"
    proc = subprocess.Popen([sys.executable, str(server), str(port)], stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "patchsweep-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,  # nothing from this machine's ~/.aws
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "HF_HUB_OFFLINE": "1",
    }
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the in-process readers (sweep.status, ...) use it too
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no S3 server"
                time.sleep(0.2)
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def bucket(s3: dict[str, str]) -> str:
    """A new, empty bucket."""
    import fsspec

    name = f"b-{secrets.token_hex(4)}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    return name


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return python_m(["sweep", *args], cwd, env, timeout=300)


def _all_bytes(bucket: str) -> bytes:
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    return b"".join(fs.cat_file(p) for p in fs.find(bucket))


@pytest.mark.slow
def test_sweep_on_s3_killed_resumes_equal_and_reads_by_url(s3, bucket, tmp_path) -> None:
    url = f"s3://{bucket}/sweep.zarr"
    first = kill_part_way([*OVERRIDES, f"store.path={url}"], tmp_path, url, 2, s3)
    n_first = int((first > 0).sum())
    assert n_first < len(first), "killed too late"
    # The killed driver's lease names a dead pid on this host: the next driver takes over.
    second = _cli(s3, tmp_path, *OVERRIDES, f"store.path={url}")
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"units: {len(first) - n_first} computed this run" in second.stdout
    after = done_marks(url)
    np.testing.assert_array_equal(after[first > 0], first[first > 0])  # not recomputed
    assert (after[first == 0] == 2).all()

    local = sweep.open_results(sweep.run([*OVERRIDES, f"store.path={tmp_path / 'l.zarr'}"]))
    ds = sweep.open_results(url)
    for name in ("z_by_pos", "resid_pre", "clean_baseline", "corrupted_baseline"):
        np.testing.assert_array_equal(ds[name].values, local[name].values, err_msg=name)
    assert ds.attrs["patchsweep_fingerprint"] == local.attrs["patchsweep_fingerprint"]
    state = sweep.status(url)
    assert set(state.units_done) == {"z_by_pos", "resid_pre"}
    assert all(d == t for d, t in state.units_done.values())
    assert sum(t for _, t in state.units_done.values()) == len(first)
    assert state.holder is None  # released at the end
    drawn = python_m(["sweep.plot", url, "--out", "pictures"], tmp_path, s3)
    assert drawn.returncode == 0, drawn.stderr
    pictures = {p.name for p in (tmp_path / "pictures").iterdir()}
    assert pictures >= {"index.html", "z_by_pos.png", "resid_pre.png"}
    xr.testing.assert_identical(sweep.open_results(url).load(), ds.load())

    # The credentials are in no output and no object of the bucket.
    for text in ((tmp_path / "killed.log").read_text(), second.stdout, second.stderr):
        assert SECRET not in text and "Found credentials" not in text
    assert SECRET.encode() not in _all_bytes(bucket)
    assert "Found endpoint" not in second.stdout + second.stderr  # botocore stays quiet


def test_a_second_driver_is_refused_and_the_store_untouched(s3, bucket, tmp_path) -> None:
    url = f"s3://{bucket}/busy.zarr"
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).pipe_file(f"{bucket}/notes.txt", b"x")
    with pytest.raises(sweep.errors.SweepError, match="no such store"):
        sweep.status(url)  # lists the bucket in this process before the store exists
    out = _cli(s3, tmp_path, *OVERRIDES, "task.n_prompts=2", f"store.path={url}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert sweep.status(url).holder is None  # seen at once: no stale listing kept
    before = _all_bytes(bucket)
    lease = Lease(backend_for(url), timeout_s=120)
    lease.acquire()  # a live driver: this process
    try:
        refused = _cli(s3, tmp_path, *OVERRIDES, "task.n_prompts=2", f"store.path={url}")
    finally:
        lease.release()
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another sweep" in lines[0], refused.stderr
    assert f"pid {os.getpid()}" in lines[0]
    assert _all_bytes(bucket) == before  # the lease is the refused driver's only read


class _Paused:
    """A store's backend that waits at a barrier after reading a tagged file, so that two
    drivers both read the same stale lease before either writes."""

    def __init__(self, url: str, barrier: threading.Barrier) -> None:
        self._backend = backend_for(url)
        self._barrier = barrier

    def read_tagged(self, rel: str) -> tuple[bytes, str]:
        got = self._backend.read_tagged(rel)
        self._barrier.wait(timeout=30)
        return got

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def __str__(self) -> str:
        return str(self._backend)


def _take(leases: list[Lease], i: int, outcome: dict[int, str]) -> None:
    try:
        leases[i].acquire()
        outcome[i] = "won"
    except StoreBusyError as e:
        outcome[i] = str(e)


def test_two_drivers_racing_for_a_stale_lease_exactly_one_wins(s3, bucket) -> None:
    url = f"s3://{bucket}/race.zarr"
    stale = {"host": "a-node-that-died", "pid": 1, "since": 0.0, "renewed": 0.0, "token": "x"}
    backend = backend_for(url)
    backend.write(LEASE, json.dumps(stale).encode())
    for _ in range(3):
        barrier = threading.Barrier(2)
        leases = [Lease(_Paused(url, barrier), timeout_s=60) for _ in range(2)]  # type: ignore[arg-type]
        outcome: dict[int, str] = {}
        threads = [threading.Thread(target=_take, args=(leases, i, outcome)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [i for i in range(2) if outcome.get(i) == "won"]
        assert len(winners) == 1, outcome
        loser = outcome[1 - winners[0]]
        assert "took over its stale lease at the same moment" in loser
        holder = read_holder(backend)
        assert holder is not None and holder.token == leases[winners[0]].me.token
        leases[winners[0]]._stop.set()  # stop renewing; leave its lease behind, stale
        backend.write(LEASE, json.dumps(stale).encode())


class _TakenOver:
    """A store's backend on which another driver takes the lease over just after this
    driver reads it: between a renewal's read and its write."""

    def __init__(self, url: str, newer: dict) -> None:
        self._backend = backend_for(url)
        self._newer = json.dumps(newer).encode()

    def read_tagged(self, rel: str) -> tuple[bytes, str]:
        got = self._backend.read_tagged(rel)
        self._backend.write(rel, self._newer)
        return got

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def __str__(self) -> str:
        return str(self._backend)


def test_a_renewal_never_overwrites_a_lease_taken_over(s3, bucket) -> None:
    """A driver whose lease is taken over between its renewal's read and write: the
    renewal does not write over the new holder's lease (a compare-and-swap), and the
    driver stops without writing."""
    url = f"s3://{bucket}/renew.zarr"
    newer = {"host": "another-node", "pid": 7, "since": time.time(), "renewed": time.time(),
             "token": "newer"}  # fmt: skip
    stalled = Lease(_TakenOver(url, newer), timeout_s=60)  # type: ignore[arg-type]
    assert stalled.backend.create_exclusive(LEASE, stalled.data())
    stalled.renew()
    holder = read_holder(backend_for(url))
    assert holder is not None and holder.token == "newer"
    with pytest.raises(StoreBusyError, match="taken over by another sweep"):
        stalled.check()


@pytest.mark.parametrize("case", ["no bucket", "no credentials", "unreachable"])
def test_object_store_problems_are_one_line_naming_the_fix(s3, bucket, tmp_path, case) -> None:
    env, url = dict(s3), f"s3://{bucket}/x.zarr"
    if case == "no bucket":
        url, want = "s3://no-such-bucket/x.zarr", "bucket 'no-such-bucket' does not exist"
    elif case == "no credentials":
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        want = "no credentials for the object store"
    else:
        env |= {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_MAX_ATTEMPTS": "1"}
        want = "cannot reach the object store at http://127.0.0.1:"
    out = _cli(env, tmp_path, *OVERRIDES, f"store.path={url}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert want in lines[0] and "Traceback" not in out.stdout + out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert "units:" not in out.stdout
    assert _all_bytes(bucket) == b""  # nothing written
