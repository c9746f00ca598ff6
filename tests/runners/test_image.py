"""cluster/Dockerfile built here with buildah, and ``python -m sweep`` run inside the image.

No image registry is reachable from this machine, so the base image is made locally: a
Debian root filesystem from ``debootstrap`` (Python 3.11 and venv from Debian's packages)
imported ``FROM scratch``, passed to the Dockerfile as ``BASE``. The Dockerfile stays the
plain one a user builds anywhere; the build reaches the package registries only through
this machine's pip configuration and CA certificates, mounted read-only (``buildah bud
-v``), as behind a TLS-intercepting proxy. torch is this machine's own build (``TORCH``),
from pip's configuration (``TORCH_INDEX`` empty). The build takes minutes and about 2.5 GB;
the images it made are removed at the end (only those). The session starts the build in
a thread when this test is collected, so it overlaps the tests before it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILDAH = ["buildah", "--storage-driver", "vfs"]
NICE = ["nice", "-n", "15"]
"""The build runs beside the other tests (conftest starts it): at a low priority, in
processes of its own (not a thread of pytest's, which would hold the GIL), so that they
keep their pace and it takes what they leave."""
TAG = f"localhost/patchsweep-test:{os.getpid()}"
BASE = f"localhost/patchsweep-test-base:{os.getpid()}"


def _missing() -> str | None:
    lacking = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if lacking:
        return f"no {', '.join(lacking)}: make image-tools installs Debian's buildah, debootstrap"
    if os.geteuid() != 0:
        return "buildah --isolation chroot and debootstrap need root here"
    return None


def _pip_mounts() -> list[str]:
    """``-v`` options for this machine's pip configuration: its files, and the local
    directories and CA certificates their values name (a directory three levels up at
    most: an index's pages link to files beside them)."""
    debug = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], text=True,
                           capture_output=True, check=True).stdout  # fmt: skip
    dirs = set()
    for value in re.findall(r"(?:=|: )'?([^'\n]+?)'?$", debug, flags=re.M):
        for word in value.split():
            p = Path(word.removeprefix("file://"))
            if p.is_absolute() and p.exists():
                d = p if p.is_dir() else p.parent
                dirs.add(Path(*d.parts[:3]))
    files = [Path(f) for f in re.findall(r"^\s+(/\S+), exists: True", debug, flags=re.M)]
    files = [f for f in files if not any(d in f.parents for d in dirs)]
    return [x for p in [*sorted(dirs), *files] for x in ("-v", f"{p}:{p}:ro")]


def build() -> str:
    """Build the base and the Dockerfile's image; its tag, or why it could not be built
    here (as ``Skipped``). Tests call it through ``image``; the session starts it in a
    thread as soon as the image test is collected (tests/conftest.py), since the build is
    mostly downloads and copies and the other tests leave a core idle for it."""
    if (why := _missing()) is not None:
        raise Skipped(why)
    tmp = Path(tempfile.mkdtemp(prefix="patchsweep-image-"))
    try:
        return _build_in(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Skipped(Exception):
    """The image cannot be built on this machine (not a failure of the Dockerfile)."""


def _build_in(tmp: Path) -> str:
    rootfs = tmp / "rootfs"
    boot = subprocess.run(
        [*NICE, "debootstrap", "--variant=minbase",
         "--include=python3,python3-venv,ca-certificates", "bookworm", str(rootfs),
         "http://deb.debian.org/debian"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if boot.returncode != 0:
        raise Skipped(f"debootstrap could not make a base here: {boot.stderr.strip()[-300:]}")
    subprocess.run([*NICE, "tar", "-C", str(rootfs), "-cf", str(tmp / "rootfs.tar"), "."],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    shutil.rmtree(rootfs)
    (tmp / "Containerfile").write_text("FROM scratch\nADD rootfs.tar /\n")
    subprocess.run([*NICE, *BUILDAH, "bud", "--isolation", "chroot", "-t", BASE, str(tmp)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    (tmp / "rootfs.tar").unlink()
    build = subprocess.run(
        [*NICE, *BUILDAH, "bud", "--isolation", "chroot", "-f", "cluster/Dockerfile",
         "--build-arg", f"BASE={BASE}", "--build-arg", f"TORCH=torch=={_torch_version()}",
         "--build-arg", "TORCH_INDEX=", *_pip_mounts(), "-t", TAG, "."],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return TAG


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


def remove_images() -> None:
    """Remove the images this session made (only those)."""
    for name in (TAG, BASE):
        subprocess.run([*BUILDAH, "rmi", "-f", name], capture_output=True)


BUILDING: list[Future[str]] = []
"""The build started in the background by tests/conftest.py, if it was."""


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if not BUILDING:
        BUILDING.append(ThreadPoolExecutor(1).submit(build))
    try:
        tag = BUILDING[0].result()
    except Skipped as why:
        pytest.skip(str(why))
    try:
        yield tag
    finally:
        remove_images()


@pytest.mark.slow
def test_the_image_runs_a_sweep(image: str) -> None:
    run = subprocess.run(
        [*BUILDAH, "run", "--isolation", "chroot", "--env", "HF_HUB_OFFLINE=1",
         (c := _container(image)), "--", "sh", "-c",
         "cd /tmp && python -m sweep task.n_prompts=4 runner.progress=false "
         "store.plots=false store.path=/tmp/s.zarr && python -c "
         "'import sweep; print(sweep.open_results(\"/tmp/s.zarr\").sizes[\"prompt\"])'"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    subprocess.run([*BUILDAH, "rm", c], capture_output=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"units: (\d+) computed this run, \1 in the sweep", run.stdout)
    assert run.stdout.strip().splitlines()[-1] == "4"  # the store opens with its 4 prompts


def _container(image: str) -> str:
    out = subprocess.run([*BUILDAH, "from", image], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_the_manifest_names_the_image_the_readme_builds() -> None:
    """The RayJob's containers use the image the cluster README and the Dockerfile tell
    people to build and push."""
    job = yaml.safe_load((ROOT / "cluster" / "k8s" / "rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    pods = [g["template"] for g in groups] + [job["spec"]["submitterPodTemplate"]]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert len(images) == 1
    (name,) = images
    readme = (ROOT / "cluster" / "README.md").read_text()
    assert f"docker build -f cluster/Dockerfile -t {name} ." in readme
    assert f"-t {name} " in (ROOT / "cluster" / "Dockerfile").read_text()
