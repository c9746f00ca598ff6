"""Choosing a runner: beside the runners it chooses between, so ``base`` imports none of them."""

from __future__ import annotations

from sweep.runners.base import Runner, WorkerFactory, default_worker
from sweep.spec import SweepSpec


def make_runner(spec: SweepSpec, make_worker: WorkerFactory = default_worker) -> Runner:
    if spec.runner.kind == "ray":
        from sweep.runners.ray import RayRunner  # only the Ray runner imports ray

        return RayRunner(spec, make_worker)
    from sweep.runners.local import LocalRunner

    return LocalRunner(spec, make_worker)
