"""tests/zygote.py's forked commands behave as `python -m` in a fresh interpreter does: the
same exit code, output, working directory, environment, arguments, import path and exit
handlers; so the tests that use it check what a user's command does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.zygote import python_m, python_popen

PROBE = """
import atexit, os, sys
atexit.register(lambda: print("exit handler ran"))
print(os.getcwd(), os.environ.get("PROBE"), sys.argv[1:], sys.path[0] == os.getcwd())
print("to stderr", file=sys.stderr)
import neighbour  # beside the command, where the working directory is
kind = sys.argv[1]
if kind == "raise":
    raise ValueError("bad")
if kind == "message":
    sys.exit("a message")
sys.exit(int(kind))
"""


@pytest.mark.parametrize("kind", ["0", "3", "raise", "message"])
def test_a_forked_command_is_what_a_fresh_interpreter_gives(tmp_path: Path, kind: str) -> None:
    (tmp_path / "probe_mod.py").write_text(PROBE)
    (tmp_path / "neighbour.py").write_text("print('neighbour imported')\n")
    env = {**os.environ, "PROBE": "é value"}
    fresh = subprocess.run([sys.executable, "-m", "probe_mod", kind, "x y"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    forked = python_m(["probe_mod", kind, "x y"], tmp_path, env, timeout=60)
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout)
    assert forked.stderr.splitlines()[0] == "to stderr"
    assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    assert f"{tmp_path} é value ['{kind}', 'x y'] True" in forked.stdout
    assert forked.stdout.rstrip().endswith("exit handler ran")


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs(tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "quick.py").write_text("print('still here')\n")
    with pytest.raises(subprocess.TimeoutExpired):
        python_m(["sleeper"], tmp_path, timeout=1)
    assert python_m(["quick"], tmp_path, timeout=30).stdout == "still here\n"


def test_a_started_command_is_signalled_and_logged_as_popen_would(tmp_path: Path) -> None:
    """A signal ends the child as it ends a fresh interpreter (the same exit code); a child
    in a new session leads its own process group; a log gets both streams in order."""
    (tmp_path / "waiter.py").write_text(
        "import sys, time\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)"
        "\nprint('out again', flush=True)\ntime.sleep(60)\n"
    )
    log = tmp_path / "waiter.log"
    forked = python_popen(["waiter"], tmp_path, log=log, new_session=True)
    fresh = subprocess.Popen([sys.executable, "-m", "waiter"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while log.read_text().count("\n") < 3:
        assert time.monotonic() < deadline and forked.poll() is None, log.read_text()
        time.sleep(0.02)
    assert log.read_text() == "out\nerr\nout again\n"
    assert os.getpgid(forked.pid) == forked.pid != os.getpgid(0)
    with pytest.raises(subprocess.TimeoutExpired):
        forked.wait(0.1)
    forked.send_signal(signal.SIGTERM)
    fresh.send_signal(signal.SIGTERM)
    assert forked.wait(30) == fresh.wait(30) == -signal.SIGTERM
