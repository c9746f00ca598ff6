"""The wheel holds every package of sweep/: a non-editable install (``pip install
patchsweep``, the container image) imports what an editable one does."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_for_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sweep").rglob("__init__.py")
    }
    assert found - listed == set(), "add them to [tool.setuptools] packages"
    data = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "sweep" / "data").iterdir()
            if p.is_dir() and p.name != "__pycache__"}  # fmt: skip
    assert data - listed == set(), "shipped data directories go in the wheel too"
