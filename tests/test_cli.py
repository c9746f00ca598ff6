"""The command line: the default sweep, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unknown_key_names_it(tmp_path: Path) -> None:
    out = _cli(tmp_path, "grid.colour=red")
    assert out.returncode != 0
    assert "grid.colour" in out.stderr
    assert not (tmp_path / "outputs" / "sweep.zarr").exists()


def test_sweep_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    out = _cli(tmp_path, "grid.components=[attn_in]")
    assert out.returncode == 2
    assert "patchsweep: error: grid.components: unknown component 'attn_in'" in out.stderr
    assert "Traceback" not in out.stderr
