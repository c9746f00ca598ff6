"""patchsweep against auto-circuit: EAP, EAP-IG (5 steps) and a faithfulness curve of 6
sizes, one thread, CPU seconds, side by side in one run.

    python bench/autocircuit_speed.py [--shape small|gpt2|both] [--ac-python .bench-ac/bin/python]

Two shapes, random weights: 4 layers, d_model 256, 8 heads (1,519 edges), and GPT-2
small (12 layers, d_model 768, 12 heads, vocab 50257: 32,491 edges); 8 IOI prompts of 16
tokens, patchsweep's own, whose token ids auto-circuit gets too. Each figure is the least
CPU seconds of ``--repeat`` calls with the model already built (a notebook's situation):

- patchsweep: ``sweep.Sweep([...], model=m).run()``, the config composed and checked, the
  worker's start-up check, the store created and written (EAP and EAP-IG: ``grid=edges
  intervention=eap``, noising; the curve: ``grid=circuit`` ranked by that EAP store,
  every other edge carrying the corrupted run's output);
- auto-circuit (``make autocircuit`` installs it in ``.bench-ac``: it needs
  transformer-lens 2, which cannot sit beside patchsweep's 4): ``bench/autocircuit_side.py``
  in that environment, its ``mask_gradient_prune_scores`` (EAP; with
  ``integrated_grad_samples=5``, EAP-IG) and ``run_circuits`` with ``TREE_PATCH`` on a
  patchable model made once.

EAP-IG differs by design: patchsweep interpolates the inputs (5 forward and backward
passes, averaged), auto-circuit the edge masks (its 5 samples are 6 passes), so their
scores differ. Without auto-circuit the reference is the hook one the tests use
(``tests/edge_reference.py``: autograd through the hooked model, one edge at a time),
timed on a sample of edges and scaled to the graph.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/

SHAPES = {
    "small": dict(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, n_ctx=64),
    "gpt2": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=64,
                 d_vocab=50257),
}  # fmt: skip
SIZES = (10, 30, 100, 300, 1000, 3000)
QUIET = ["runner.progress=false", "store.plots=false"]
AC_PYTHON = ".bench-ac/bin/python"
"""Where ``make autocircuit`` installs auto-circuit."""


def model_keys(shape: str) -> list[str]:
    keys = ["model=native"]
    for k, v in SHAPES[shape].items():
        keys.append(f"{'+' if k == 'd_vocab' else ''}model.native.{k}={v}")  # a new key
    return keys


def least(repeat: int, call: Callable[[], object]) -> float:
    out = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        call()
        out = min(out, time.process_time() - start)
    return out


def ours(shape: str, repeat: int, tmp: Path) -> tuple[dict[str, float], dict, int]:
    """patchsweep's CPU seconds per call, the task's token ids, and the graph's edges."""
    import torch

    import sweep
    from sweep.edges.graph import GraphShape, edges
    from tests.helpers import worker

    torch.set_num_threads(1)
    keys = model_keys(shape)
    task = ["task=ioi", "task.n_prompts=8"]
    model = sweep.load_model(keys)
    total = len(edges(GraphShape(SHAPES[shape]["n_layers"], SHAPES[shape]["n_heads"])))
    sizes = ",".join(str(s) for s in SIZES if s < total)
    eap, curve = tmp / f"{shape}-eap.zarr", tmp / f"{shape}-curve.zarr"
    edge_sweep = [*keys, *task, "grid=edges", "intervention=eap", "intervention.direction=noise",
                  *QUIET]  # fmt: skip

    def run(over: list[str], store: Path) -> None:
        shutil.rmtree(store, ignore_errors=True)
        sweep.Sweep([*over, f"store.path={store}"], model=model).run()

    out = {
        "eap": least(repeat, lambda: run(edge_sweep, eap)),
        "ig": least(
            repeat, lambda: run([*edge_sweep, "intervention.steps=5"], tmp / f"{shape}-ig.zarr")
        ),  # fmt: skip
    }
    run(edge_sweep, eap)  # the curve's ranking
    circuit = [*keys, "grid=circuit", f"grid.scores={eap}", f"grid.sizes=[{sizes}]", *QUIET]
    out["curve"] = least(repeat, lambda: run(circuit, curve))
    w = worker([*keys, *task, "grid.components=[resid_pre]"])
    n = w.task.n_prompts
    clean, corrupted = (np.asarray(t).tolist() for t in w.task.rows(np.arange(n)))
    tokens = {"clean": clean, "corrupted": corrupted, "answer": np.asarray(w.task.answer).tolist(),
              "wrong": np.asarray(w.task.wrong).tolist(), "d_vocab": int(w.model.cfg.d_vocab),
              "shape": {k: v for k, v in SHAPES[shape].items() if k != "d_vocab"},
              "sizes": [s for s in SIZES if s < total]}  # fmt: skip
    return out, tokens, total


def theirs(python: str, tokens: Path, repeat: int) -> dict[str, float]:
    done = subprocess.run([python, str(Path(__file__).with_name("autocircuit_side.py")),
                           str(tokens), "--repeat", str(repeat)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def hook_reference(shape: str, sample: int, total: int) -> dict[str, float]:
    """The hook reference's CPU seconds for every edge, from ``sample`` edges (EAP and
    EAP-IG with 5 steps), scaled to ``total``."""
    import random

    import torch

    from sweep.edges.graph import GraphShape, edges
    from tests.edge_reference import eap_logit_diffs
    from tests.helpers import worker

    torch.set_num_threads(1)
    w = worker([*model_keys(shape), "task=ioi", "task.n_prompts=8",
                "grid.components=[resid_pre]"])  # fmt: skip
    every = edges(GraphShape(SHAPES[shape]["n_layers"], SHAPES[shape]["n_heads"]))
    chosen = random.Random(0).sample(every, sample)
    out = {}
    for name, steps in (("eap", 1), ("ig", 5)):
        start = time.process_time()
        eap_logit_diffs(w.model, w.task, chosen, "clean", steps)
        out[name] = (time.process_time() - start) * total / sample
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    p.add_argument(
        "--ac-python", default=os.environ.get("AUTO_CIRCUIT_PYTHON", ".bench-ac/bin/python")
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sample", type=int, default=20, help="edges the hook reference times")
    a = p.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    have_ac = Path(a.ac_python).exists()
    tmp = Path(tempfile.mkdtemp(prefix="ac-bench-"))
    against = "auto-circuit" if have_ac else "the hook reference (auto-circuit not installed)"
    print(f"one thread, CPU seconds, least of {a.repeat}; against {against}")  # noqa: T201
    other = "auto-circuit" if have_ac else "hook reference"
    print(f"| shape | edges | call | patchsweep | {other} | speed-up |")  # noqa: T201
    print("| --- | --- | --- | --- | --- | --- |")  # noqa: T201
    for shape in SHAPES if a.shape == "both" else [a.shape]:
        mine, tokens, total = ours(shape, a.repeat, tmp)
        if have_ac:
            path = tmp / f"{shape}-tokens.json"
            path.write_text(json.dumps(tokens))
            other = theirs(a.ac_python, path, a.repeat)
            assert other["edges"] == total, (other["edges"], total)
            ref = {"eap": other["eap_s"], "ig": other["ig_s"], "curve": other["curve_s"]}
        else:
            ref = hook_reference(shape, a.sample, total)
        names = {
            "eap": "EAP",
            "ig": "EAP-IG (5 steps)",
            "curve": f"curve ({len(tokens['sizes']) + 2} circuits)",
        }  # noqa: E501
        for k, name in names.items():
            if k in ref:
                print(f"| {shape} | {total:,} | {name} | {mine[k]:.2f} | {ref[k]:.2f} | "  # noqa: T201
                      f"**{ref[k] / mine[k]:.2f}x** |")  # fmt: skip


if __name__ == "__main__":
    main()
