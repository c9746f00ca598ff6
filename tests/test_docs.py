"""The docs build and the tutorial runs: ``docs/tutorial.ipynb`` executes in a real Jupyter
kernel, in an empty directory, and ``docs/tutorial.md`` (its page on the site) is the
notebook's text. ``python tests/test_docs.py`` writes the page after editing the notebook."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
PAGE = ROOT / "docs" / "tutorial.md"
NOTE = (
    "<!-- Written from tutorial.ipynb by `python tests/test_docs.py`: edit the notebook. -->\n\n"
    "*This page is the notebook [tutorial.ipynb](tutorial.ipynb): download it to run it.*\n\n"
)


def page_of(notebook: Path) -> str:
    """The notebook as a Markdown page: its text cells as they are, its code in fences."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    parts = []
    for cell in nb.cells:
        source = cell.source.strip("\n")
        parts.append(f"```python\n{source}\n```" if cell.cell_type == "code" else source)
    title, _, rest = "\n\n".join(parts).partition("\n\n")
    return f"{title}\n\n{NOTE}{rest}\n"


def test_the_tutorial_page_is_the_notebook() -> None:
    assert PAGE.read_text() == page_of(NOTEBOOK), "run: python tests/test_docs.py"


def test_the_committed_notebook_holds_no_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_the_tutorial_notebook_runs(tmp_path: Path) -> None:
    """Every cell, in order, in a fresh kernel; its own asserts check the circuit it finds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    assert (tmp_path / "tutorial" / "eapig.circuit.zarr").is_dir()
    texts = [o.get("text", "") for c in nb.cells for o in c.get("outputs", [])]
    assert any("logit_diff: clean" in t for t in texts), texts


if __name__ == "__main__":
    PAGE.write_text(page_of(NOTEBOOK))
    sys.exit(0)
