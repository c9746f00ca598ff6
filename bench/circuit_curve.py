"""Faithfulness curves of circuits ranked by exact, EAP and EAP-IG scores, and their cost.

    python bench/circuit_curve.py [--prompts 8]

Side by side in one run, each a real ``python -m sweep`` / ``python -m sweep.circuit``
process:

- faithfulness, on the shipped induction model (16 prompts): every edge scored by exact
  edge patching, EAP and EAP-IG (5 steps), all noising (the direction a circuit ablates
  in); the top-K circuits of each ranking (dangling edges left out), every other edge
  carrying the corrupted run's output; (circuit - empty) / (full - empty) of the mean
  logit difference, the edges each circuit holds, and the curve's CPR and CMD (over MIB's
  fractions of the graph); then the same under mean ablation, ranked by scores of mean
  ablation (exact, EAP) and, for contrast, by the noising scores;
- cost, on the GPT-2-small shape (12 layers, 32,491 edges, random weights, ``--prompts``
  IOI prompts): one faithfulness curve of 6 sizes (ranked by EAP), against one plain
  forward of the model over the same prompts measured in the same process run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/

from prompt_scale import checkpoint, task_file  # noqa: E402

import sweep as ps  # noqa: E402
from sweep.results.faithfulness import curve_scores, faithfulness  # noqa: E402

METHODS = {"exact": [], "EAP": ["intervention=eap"],
           "EAP-IG (5 steps)": ["intervention=eap", "intervention.steps=5"]}  # fmt: skip
SIZES = "5,10,20,30,50"
COMMON = ["runner.progress=false", "store.plots=false"]


def run(module: str, *args: str) -> tuple[str, float]:
    """One process; its output and wall seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, time.perf_counter() - start


def induction(tmp: Path) -> list[str]:
    rows, sizes = [], [int(s) for s in SIZES.split(",")]
    mean = {
        "exact": ["intervention=mean"],
        "EAP": ["intervention=eap", "intervention.ablation=mean"],
        "EAP of noising": ["intervention=eap", "intervention.direction=noise"],
    }
    cases = [(f"{n}", "patch noise", ["intervention.direction=noise", *o], [])
             for n, o in METHODS.items()]  # fmt: skip
    cases += [(n, "mean", o, ["--ablation", "mean"]) for n, o in mean.items()]
    for i, (name, ablated, over, flags) in enumerate(cases):
        store = tmp / f"induction-{i}.zarr"
        run("sweep", "grid=edges", *over, *COMMON, f"store.path={store}")
        out = tmp / f"induction-{i}.circuit.zarr"
        run("sweep.circuit", str(store), "--sizes", SIZES, *flags, *COMMON, f"store.path={out}")
        mib = tmp / f"induction-{i}.mib.zarr"
        run("sweep.circuit", str(store), "--sizes", "mib", *flags, *COMMON, f"store.path={mib}")
        ds = ps.open_results(out).load()
        f = faithfulness(ds)
        held = ds["size_edges"]
        scores = curve_scores(ps.open_results(mib).load())
        assert scores is not None
        cells = [f"{float(f.sel(size=s)):.2f} ({int(held.sel(size=s))})" for s in sizes]
        rows.append(f"| {name} | {ablated} | " + " | ".join(cells) + f" | {scores.cpr:.2f} "
                    f"[{scores.cpr_ci[0]:.2f}, {scores.cpr_ci[1]:.2f}] | {scores.cmd:.2f} "
                    f"[{scores.cmd_ci[0]:.2f}, {scores.cmd_ci[1]:.2f}] |")  # fmt: skip
    return rows


def plain_forward_s(model_dir: Path, task: Path, repeats: int = 5) -> float:
    """Seconds of one forward of the model over the task's prompts (the best of a few)."""
    import torch

    from tests.helpers import worker

    w = worker(["model=hf", f"model.name={model_dir}", "task=prompts", f"task.path={task}",
                "grid.components=[resid_pre]", "grid.layers=[0]"])  # fmt: skip
    tokens = torch.as_tensor(w.task.rows(list(range(w.task.n_prompts)))[0])
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            w.model(tokens)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--pictures", default=None, help="copy the curves' and the circuit's PNGs "
                   "here (docs/)")  # fmt: skip
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="circuits-"))
    print(f"CPU threads {os.cpu_count()}")  # noqa: T201
    print("Induction model, 16 prompts: faithfulness of the top-K circuit (edges it holds)")  # noqa: T201
    ks = " | ".join(f"K={s}" for s in SIZES.split(","))
    print(f"| edges ranked by | ablation | {ks} | CPR (MIB sizes) | CMD (MIB sizes) |")  # noqa: T201
    print("| --- | --- |" + " --- |" * (len(SIZES.split(",")) + 2))  # noqa: T201
    for row in induction(tmp):
        print(row)  # noqa: T201
    if a.pictures:  # the README's pictures: the three rankings' curves, the exact circuit
        stores = [str(tmp / f"induction-{i}.circuit.zarr") for i in range(len(METHODS))]
        run("sweep.plot", *stores, "--out", str(tmp / "plots"))
        out = Path(a.pictures)
        for name in ("faithfulness.png", "circuit_graph.png"):
            (out / name).write_bytes((tmp / "plots" / name).read_bytes())
    full = checkpoint(tmp / "gpt2-small-shape")
    task = task_file(tmp / "task12.jsonl", a.prompts, full)
    model = ["model=hf", f"model.name={full}", "task=prompts", f"task.path={task}"]
    store = tmp / "eap.zarr"
    run("sweep", "grid=edges", "intervention=eap", "intervention.direction=noise", *model,
        *COMMON, f"store.path={store}")  # fmt: skip
    out, wall = run("sweep.circuit", str(store), "--sizes", "10,30,100,300,1000,3000", *COMMON)
    m = re.search(r"(\d+) circuits in ([\d.]+) s", out)
    assert m, out
    n, seconds = int(m.group(1)), float(m.group(2))
    forward = plain_forward_s(full, task)
    print(  # noqa: T201
        f"GPT-2-small shape, {a.prompts} prompts: one faithfulness curve of 6 sizes (and the "
        f"empty and full circuits: {n} circuit forwards) in {seconds:.1f} s ({wall:.1f} s "
        f"with loading); {seconds / n:.2f} s per circuit, {seconds / n / forward:.1f}x one "
        f"plain forward of the model over the same prompts ({forward * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
