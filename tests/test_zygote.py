"""tests/zygote.py's forked commands behave as `python -m` in a fresh interpreter does: the
same exit code, output, working directory, environment, arguments, import path and exit
handlers; so the tests that use it check what a user's command does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.zygote import python_m

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
