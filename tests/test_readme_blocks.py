"""Every code block of the README and the docs pages runs as written, in order (the README,
then the pages in the site's order; the tutorial is a notebook that tests/test_docs.py
runs), in an empty directory: the bash blocks' commands as processes (``python`` is this
interpreter), the python blocks in one namespace, as a notebook runs them. What a reader
brings is provided here (a task file, a circuit file, an SAE folder, the docs' metric
module; a local checkpoint stands for a hub id, which cannot download offline), and the
lines this machine cannot run are listed with the reason."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sweep.tasks import docstring, greater_than, ioi, sva
from tests.helpers import ioi_rows, save_gpt2, train_tokenizer, write_task
from tests.models.sae_files import save_sae
from tests.zygote import python_m

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

NOT_HERE = {
    "make test": "the test suite itself",
    "runner.address=auto": "joins a running Ray cluster (tests/runners/test_cluster.py does)",
}
"""Lines that need what this test cannot have, by a part of the line, and why."""
MAKE = {"make demo": "python -m sweep"}
"""Make targets, as the Makefile runs them (after setting up .venv)."""


def pages() -> list[Path]:
    """The README, then every docs page in the order of mkdocs.yml's nav."""
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    names = [name for item in nav for name in item.values() if name != "tutorial.md"]
    return [ROOT / "README.md", *(ROOT / "docs" / name for name in names)]


def blocks() -> list[tuple[str, str, str]]:
    """(page, language, text) of every fenced block, in order."""
    return [(p.name, m.group(1), m.group(2)) for p in pages()
            for m in FENCE.finditer(p.read_text())]  # fmt: skip


def test_every_docs_page_is_in_the_nav() -> None:
    listed = {p.name for p in pages()} | {"tutorial.md"}
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= listed


def commands(text: str) -> list[list[str]]:
    """A bash block's commands: continued lines joined, comments dropped, shell-split."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        if any(part in line for part in NOT_HERE):
            continue
        for target, command in MAKE.items():
            line = line.replace(target, command)
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def provide(cwd: Path) -> dict[str, str]:
    """The files a reader brings; and what stands for a hub id (a 3-layer, 8-head GPT-2
    checkpoint with a tokenizer of the shipped text tasks that reads years as GPT-2's does:
    the README's grids need layer 2 and head 5)."""
    write_task(cwd / "my_task.jsonl", ioi_rows())  # for the GPT-2 checkpoint's commands
    (cwd / "my tasks").mkdir()  # for the shipped model (letters): a repeated sequence
    rows = [{"clean": " M Y N B I M Y N B", "corrupted": " M Y N B I Q P Z X",
             "answer": " I", "wrong": " Q"}]  # fmt: skip
    write_task(cwd / "my tasks" / "ioi.jsonl", rows)
    (cwd / "my_circuit.txt").write_text("embed -> a0.h3.v\na0.h3 -> a1.h1.k\na1.h1 -> logits\n")
    save_sae(cwd / "my_sae", "jumprelu", 64, 256, "blocks.1.hook_resid_pre")  # the shipped model's
    metric = FENCE.findall((ROOT / "docs" / "interventions.md").read_text())
    (cwd / "my_metrics.py").write_text(next(t for lang, t in metric if "def top_margin" in t))
    model = cwd.parent / "checkpoint"
    model.mkdir()
    corpus = [*ioi.corpus(), *greater_than.corpus(), *sva.corpus(), *docstring.corpus()]
    vocab = train_tokenizer(model, corpus, 3000)
    save_gpt2(model, vocab, 0, n_embd=64, n_layer=3, n_head=8, initializer_range=0.2)
    return {"model.name=gpt2": f"model.name={model}", "/models/my-checkpoint": str(model)}


def substitute(text: str, table: dict[str, str]) -> str:
    for a, b in table.items():
        text = text.replace(a, b)
    return text


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "reader"
    cwd.mkdir()
    table = provide(cwd)
    monkeypatch.chdir(cwd)
    namespace: dict[str, object] = {}
    ran = {"bash": 0, "python": 0}
    for k, (page, language, text) in enumerate(blocks()):
        text = substitute(text, table)
        if language == "python":
            exec(compile(text, f"{page} python block {k}", "exec"), namespace)  # noqa: S102
            ran["python"] += 1
        elif language == "bash":
            for words in commands(text):
                assert words[0] == "python", f"README runs {words[0]!r}: add it to MAKE or NOT_HERE"
                assert words[1] == "-m", f"README runs python without -m: {shlex.join(words)}"
                done = python_m(words[2:], cwd)  # forked from a process that imported torch
                assert done.returncode == 0, f"{page}: {shlex.join(words)}\n{done.stderr[-3000:]}"
                ran["bash"] += 1
    assert ran["python"] >= 7 and ran["bash"] >= 25, ran
