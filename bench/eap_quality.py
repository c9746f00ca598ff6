"""How well EAP and EAP-IG rank edges against exact edge patching, and what they cost.

    python bench/eap_quality.py [--prompts 8] [--reference 40]

Side by side in one run, each a real ``python -m sweep grid=edges`` process:

- quality, on the shipped induction model (16 prompts) and on a GPT-2-shaped checkpoint
  (4 layers of GPT-2-small's width, random weights, 8 IOI prompts): every edge's mean
  effect by exact edge patching, by EAP and by EAP-IG (5 steps); Spearman's rank
  correlation of each estimate with the exact effects, and the precision of its top 50
  edges (the share of its 50 largest |effects| among the exact top 50);
- cost, on the GPT-2-small shape (12 layers, 32,491 edges, 8 prompts): EAP-IG with 5
  steps for every edge, against one hooked TransformerLens forward per edge (the peers'
  way; measured on ``--reference`` edges and projected to all of them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/

from edge_sweep import _reference_rate, sweep  # noqa: E402
from prompt_scale import checkpoint, task_file  # noqa: E402

import sweep as ps  # noqa: E402

METHODS = {"exact": [], "EAP": ["intervention=eap"],
           "EAP-IG (5 steps)": ["intervention=eap", "intervention.steps=5"]}  # fmt: skip


def effects(store: Path) -> np.ndarray:
    """Every edge's mean effect on logit_diff (NaN pairs that are not edges dropped)."""
    ds = ps.open_results(store).load()
    base = ds.attrs["base_run"]
    mean = (ds["edges"] - ds[f"{base}_baseline"]).sel(metric="logit_diff").mean("prompt")
    return mean.values.ravel()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def precision(estimate: np.ndarray, exact: np.ndarray, k: int = 50) -> float:
    top = [set(np.argsort(-np.abs(x))[:k]) for x in (estimate, exact)]
    return len(top[0] & top[1]) / k


def quality(name: str, base: list[str], tmp: Path) -> list[str]:
    slug = "".join(c if c.isalnum() else "-" for c in name)
    runs = {m: sweep([*base, *over], tmp / f"{slug}-{i}.zarr") for i, (m, over) in
            enumerate(METHODS.items())}  # fmt: skip
    values = {m: effects(tmp / f"{slug}-{i}.zarr") for i, m in enumerate(METHODS)}
    keep = np.isfinite(values["exact"])
    exact = values["exact"][keep]
    rows = []
    for m in METHODS:
        est, r = values[m][keep], runs[m]
        corr = "1 (itself)" if m == "exact" else f"{spearman(est, exact):.3f}"
        prec = "1 (itself)" if m == "exact" else f"{precision(est, exact):.2f}"
        rows.append(f"| {name} | {m} | {r['edges']} | {corr} | {prec} | {r['sweep_s']:.1f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--reference", type=int, default=40, help="edges the reference runs")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eap-"))
    common = ["grid=edges", "runner.progress=false", "store.plots=false"]
    small = checkpoint(tmp / "gpt2-4-layers", n_layer=4)
    task = task_file(tmp / "task.jsonl", a.prompts, small)
    gpt2 = ["model=hf", f"model.name={small}", "task=prompts", f"task.path={task}"]
    print(f"CPU threads {os.cpu_count()}; effects on logit_diff, denoising, mean over prompts")  # noqa: T201
    print("| model | scores | edges | Spearman with exact | top-50 precision | sweep s |")  # noqa: T201
    print("| --- | --- | --- | --- | --- | --- |")  # noqa: T201
    for row in quality("induction (shipped)", common, tmp) + quality(
        "GPT-2 shape, 4 layers", [*common, *gpt2], tmp
    ):
        print(row)  # noqa: T201
    full = checkpoint(tmp / "gpt2-small-shape")
    task = task_file(tmp / "task12.jsonl", a.prompts, full)
    big = ["model=hf", f"model.name={full}", "task=prompts", f"task.path={task}", *common]
    ig = sweep([*big, "intervention=eap", "intervention.steps=5"], tmp / "ig.zarr")
    rate = _reference_rate(big, a.reference)
    naive = ig["edges"] / rate
    print(
        f"GPT-2-small shape, {a.prompts} prompts: EAP-IG (5 steps) scored all "  # noqa: T201
        f"{ig['edges']} edges in {ig['sweep_s']:.1f} s ({ig['wall_s']:.1f} s with loading); "
        f"one hooked forward per edge: {rate:.2f} edges/s, {naive / 3600:.1f} h for all "
        f"({naive / ig['sweep_s']:.0f}x EAP-IG's time)"
    )


if __name__ == "__main__":
    main()
