"""How long the HTML page of a large store takes to open in a browser.

    python bench/page_load.py [--prompts 1000 --layers 12 --heads 12 --positions 128]

The store (a ``z_by_pos`` map, layers x heads x positions, over many prompts) is written by
the real driver into a real zarr store; its values come from a stand-in worker (seeded
random effects and tokens), since what is measured is the page, not a sweep. Reported, side
by side in one run: the time ``sweep.plot.render`` takes, the page's size, and the time
until the page's script has drawn every map in headless Chromium (``performance.now()``
when its first draw ends), against the same Chromium opening a page of plotly.js alone
(the floor any plotly page pays). Needs Chromium (``make browser``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sweep.config import to_spec
from sweep.driver import run_spec
from sweep.plan import BlockData, Describe, ModelShape, TaskInfo, UnitResult, WorkUnit
from sweep.results.plot import render

WORDS = ["the", " cat", " sat", " on", " a", " mat", " and", " then", " ran", " far"]


class Synthetic:
    """A worker that answers every unit with seeded random effects (no model)."""

    def __init__(self, spec: Any, layers: int, heads: int, positions: int, prompts: int):
        self.shape = ModelShape(n_layers=layers, n_heads=heads)
        self.positions, self.prompts = positions, prompts

    def execute(self, job: Any) -> Any:
        if isinstance(job, Describe):
            versions = {"patchsweep": "bench", "transformer_lens": "bench"}
            return TaskInfo(self.shape, (self.positions,) * self.prompts, versions, "fast", 1, 1)
        assert isinstance(job, WorkUnit)
        rng = np.random.default_rng(job.index)
        grid = [len(v) for _, v in job.grid]
        values = rng.normal(0.5, 1.0, (1, len(job.layers), *grid, job.n_prompts))
        n = job.n_prompts
        clean = [[WORDS[(i + j) % len(WORDS)] for j in range(self.positions)] for i in range(n)]
        corrupted = [[" dog" if j == 2 else t for j, t in enumerate(row)] for row in clean]
        block = BlockData(job.prompt_start, np.full((1, n), 3.0), np.zeros((1, n)), clean,
                          corrupted)  # fmt: skip
        return UnitResult(values.astype(np.float32), block)


def chromium_ready_ms(page: Path, profile: Path) -> float:
    out = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    found = re.search(r'data-ready-ms="(\d+)"', out.stdout)
    if not found:
        raise SystemExit(f"the page never finished drawing: {page}")
    return float(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=1000)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--positions", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    from sweep import compose_config

    tmp = Path(tempfile.mkdtemp(prefix="page_load_"))
    store = tmp / "large.zarr"
    spec = to_spec(compose_config([
        "model=native", f"model.native.n_layers={a.layers}", f"model.native.n_heads={a.heads}",
        "task=ioi", f"task.n_prompts={a.prompts}", "grid.components=[z_by_pos]",
        "store.chunk_kb=4096", "runner.progress=false", f"store.path={store}",
    ]))  # fmt: skip
    start = time.perf_counter()
    run_spec(spec, "", lambda s: Synthetic(s, a.layers, a.heads, a.positions, a.prompts))
    made = time.perf_counter() - start
    start = time.perf_counter()
    out = render(store, tmp / "plots")
    rendered = time.perf_counter() - start
    page = out / "index.html"
    floor = tmp / "plotly_only.html"
    from plotly.offline import get_plotlyjs

    floor.write_text(
        f"<!doctype html><html><head><script>{get_plotlyjs()}</script></head><body><script>"
        "window.addEventListener('load', () => { document.body.dataset.readyMs = "
        "String(Math.round(performance.now())); });</script></body></html>"
    )
    ready = [chromium_ready_ms(page, tmp / f"profile{i}") for i in range(a.repeats)]
    alone = [chromium_ready_ms(floor, tmp / f"floor{i}") for i in range(a.repeats)]
    cells = a.layers * a.heads * a.positions
    base, mine = float(np.median(alone)), float(np.median(ready))
    size = page.stat().st_size / 2**20
    lines = [
        f"store: {cells:,} cells x {a.prompts} prompts (z_by_pos), written in {made:.1f} s",
        f"render (PNGs + page): {rendered:.1f} s; page {size:.1f} MB",
        f"| page | opened and drawn in Chromium (median of {a.repeats}) | ratio |",
        "| --- | --- | --- |",
        f"| plotly.js alone | {base:.0f} ms | 1.00x |",
        f"| the store's page ({size:.1f} MB) | {mine:.0f} ms | {mine / base:.2f}x |",
    ]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
