"""Every dotted ``sweep.*`` name the READMEs mention imports: a module moved without its
README line is a user's first ``ImportError``."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [
    ROOT / "README.md",
    ROOT / "cluster" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
# Not after "/", "." or a word character: "outputs/sweep.zarr" is a file, not a name.
NAME = re.compile(r"(?<![/\w.])sweep(?:\.[A-Za-z_]\w*)+")


def mentioned() -> list[str]:
    return sorted({m.group(0) for p in READMES for m in NAME.finditer(p.read_text())})


def resolve(dotted: str) -> object:
    """Import the longest module prefix, then look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_readmes_mention_names() -> None:
    assert {"sweep.run", "sweep.status", "sweep.open_results"} <= set(mentioned())


@pytest.mark.parametrize("dotted", mentioned())
def test_every_dotted_name_in_the_readmes_imports(dotted: str) -> None:
    assert resolve(dotted) is not None
