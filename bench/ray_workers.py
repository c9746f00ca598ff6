"""Cells per second of the in-process runner and of Ray with 1 and 2 workers.

    python bench/ray_workers.py [--layers 4 --d-model 256 --prompts 16]

Each configuration runs the same sweep into a fresh store; the figure is cells computed
divided by the time from the first unit sent to the last result written (model loading
and worker start-up are reported separately). Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ray

import sweep


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--components", default="resid_pre,z_by_pos")
    args = p.parse_args()
    grid = [
        "model=native",
        "task=ioi",
        f"model.native.n_layers={args.layers}",
        f"model.native.d_model={args.d_model}",
        f"model.native.n_heads={args.heads}",
        f"model.native.d_head={args.d_model // args.heads}",
        f"model.native.d_mlp={4 * args.d_model}",
        f"task.n_prompts={args.prompts}",
        f"grid.components=[{args.components}]",
        "store.chunk_kb=16",
        "runner.progress=false",
    ]
    cpus = os.cpu_count() or 1
    ray.init(
        num_cpus=cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1"
    )
    runs = [("local (in-process)", ["runner=local"])]
    runs += [(f"ray, {n} worker(s)", ["runner=ray", f"runner.num_workers={n}"]) for n in (1, 2)]
    print(
        f"model: native {args.layers} layers, d_model {args.d_model}; {args.prompts} prompts; "
        f"grid {args.components}; {cpus} CPUs"
    )
    print(f"{'runner':<22}{'cells':>8}{'sweep s':>10}{'cells/s':>10}{'total s':>10}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, extra) in enumerate(runs):
            s = sweep.run_config(
                sweep.compose_config([*grid, *extra, f"store.path={tmp}/{i}.zarr"])
            )
            rate = s.cells_run / s.sweep_seconds
            base = base or rate
            print(
                f"{label:<22}{s.cells_run:>8}{s.sweep_seconds:>10.2f}{rate:>10.0f}{s.seconds:>10.2f}"
                f"   ({rate / base:.2f}x local)"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
