"""Every edge of a GPT-2-small-shaped model, end to end: ``python -m sweep grid=edges``.

    python bench/edge_sweep.py [--prompts 8] [--memory-mb 1024] [--reference 40]

A GPT-2-small-shaped checkpoint (12 layers, d_model 768, 12 heads, vocab 50257, random
weights, saved locally with a BPE tokenizer trained on the IOI corpus), 8 IOI prompts of
15 tokens, denoising, logit_diff. Two real sweeps, each its own ``python -m sweep``
process with a fresh store (model loading, cached runs, units, zarr writes included):

- heads: the receivers of head 0 of every layer (``grid.receivers=[a*.h0.*]``, its q, k
  and v: 3 of the 36 head receivers of each layer, each with every sender before it), so
  the sample's edges per layer are 1/12 of all head-receiver edges of that layer;
- rest: every MLP receiver and the logits (``grid.receivers=[m*,logits]``), in full.

All 32,491 edges take about 12 x heads + rest (the sweeps' own seconds, loading once).
Peak resident memory of each process beside ``runner.memory_mb`` and the model's weights.
``--reference N``: N of the sample's edges by one hooked TransformerLens forward per edge
in this process after the sweeps (``bench/edge_speed.py``'s reference), for the ratio.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/

from prompt_scale import checkpoint, task_file  # noqa: E402

PARTS = {"heads": "[a*.h0.*]", "rest": "[m*,logits]"}
HEAD_SHARE = 12
"""All head receivers over the sample's (36 per layer over 3)."""


def sweep(args: list[str], store: Path) -> dict:
    """One ``python -m sweep`` process: its edges, sweep seconds, wall seconds, peak RSS."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "sweep", *args, f"store.path={store}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own peak memory
    out = proc.stdout.read() if proc.stdout else ""
    assert status == 0, (proc.stderr.read() if proc.stderr else "")[-3000:]
    m = re.search(r"(\d+) edges in ([\d.]+) s", out)
    assert m, out
    return {
        "edges": int(m.group(1)),
        "sweep_s": float(m.group(2)),
        "wall_s": time.perf_counter() - start,
        "peak_mb": usage.ru_maxrss / 1024,
        "top": [x.strip() for x in out.splitlines() if " -> " in x][:3],
    }


LOADED = """
import resource, sys
from sweep.config import to_spec
from sweep.driver import compose_config
from sweep.models import load_model
model = load_model(to_spec(compose_config(sys.argv[1:])).model)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def loaded_mb(args: list[str]) -> float:
    """Peak RSS of a process that only loads the model (Python, torch, the weights)."""
    out = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--memory-mb", type=float, default=1024.0)
    p.add_argument("--reference", type=int, default=40, help="edges the reference runs")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edge-sweep-"))
    model = checkpoint(tmp / "gpt2-small-shape")
    task = task_file(tmp / "task.jsonl", a.prompts, model)
    base = [
        "model=hf", f"model.name={model}", "task=prompts", f"task.path={task}", "grid=edges",
        f"runner.memory_mb={a.memory_mb:g}", "runner.progress=false", "store.plots=false",
    ]  # fmt: skip
    runs = {k: sweep([*base, f"grid.receivers={v}"], tmp / f"{k}.zarr") for k, v in PARTS.items()}
    heads, rest = runs["heads"], runs["rest"]
    total = HEAD_SHARE * heads["edges"] + rest["edges"]
    projected = HEAD_SHARE * heads["sweep_s"] + rest["sweep_s"]
    load = heads["wall_s"] - heads["sweep_s"]
    params = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 2**20
    print(f"GPT-2-small shape (random weights), {a.prompts} IOI prompts of 15 tokens, "
          f"denoising, logit_diff; runner.memory_mb={a.memory_mb:g}; CPU threads "
          f"{os.cpu_count()}")  # fmt: skip
    print("| sweep | receivers | edges | sweep s | edges/s | wall s | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k, r in runs.items():
        rate = r["edges"] / r["sweep_s"]
        print(f"| {k} | `{PARTS[k]}` | {r['edges']} | {r['sweep_s']:.1f} | {rate:.1f} | "
              f"{r['wall_s']:.1f} | {r['peak_mb']:.0f} |")  # fmt: skip
    print(f"all {total} edges: projected {projected / 60:.1f} min of sweeping "
          f"({(projected + load) / 60:.1f} min with loading once, {load:.0f} s); "
          f"{total / projected:.1f} edges/s")  # fmt: skip
    peak, loaded = max(r["peak_mb"] for r in runs.values()), loaded_mb(base)
    print(f"peak RSS {peak:.0f} MB; a process that only loads the model: {loaded:.0f} MB "
          f"(the weights {params:.0f} MB), so the sweep adds {peak - loaded:.0f} MB against "
          f"runner.memory_mb {a.memory_mb:g}")  # fmt: skip
    print("top edges of the head sample:", "; ".join(heads["top"]))
    if a.reference:
        _reference(base, a.reference, total / projected)


def _reference(base: list[str], n: int, ours: float) -> None:
    """The hooked one-forward-per-edge reference on ``n`` edges of the head sample."""
    rate = _reference_rate(base, n)
    print(f"one hooked forward per edge (same sample of receivers, {n} edges): "
          f"{rate:.2f} edges/s; all edges would take {32491 / rate / 3600:.1f} h; "
          f"patchsweep end to end {ours / rate:.1f}x")  # fmt: skip


def _reference_rate(base: list[str], n: int) -> float:
    """Edges per second of one hooked forward per edge, on ``n`` edges into head 0 of
    every layer of the GPT-2-small shape (``bench/edge_speed.py``'s reference)."""
    import torch
    from edge_speed import reference

    from sweep.config import to_spec
    from sweep.driver import compose_config
    from sweep.edges.graph import GraphShape, edges
    from sweep.engine.worker import Worker

    torch.set_num_threads(os.cpu_count() or 1)
    over = [x for x in base if not x.startswith(("grid=", "runner.progress"))]
    w = Worker(to_spec(compose_config([*over, "grid.components=[resid_pre]"])))
    graph = [e for e in edges(GraphShape(12, 12)) if ".h0." in e[1].name]
    pick = sorted(np.random.default_rng(0).choice(len(graph), n, replace=False))
    _, seconds = reference(w, [graph[j] for j in pick])
    return n / seconds


if __name__ == "__main__":
    main()
