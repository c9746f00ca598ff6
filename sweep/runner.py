"""Runners execute work units on workers and yield results as they finish.

One small interface; the in-process runner lives here, the Ray runner beside it.
The driver (``sweep.api``) owns the store: runners never write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from sweep.engine import TaskInfo, Worker
from sweep.plan import WorkUnit
from sweep.spec import SweepSpec


class Runner(Protocol):
    def describe(self) -> TaskInfo:
        """Model shape, tokens and baselines, from a worker that loaded the model."""
        ...

    def run(self, units: Sequence[WorkUnit]) -> Iterator[tuple[WorkUnit, np.ndarray]]:
        """Results in completion order."""
        ...

    def exact(self, component: str, cells: list[tuple[int, int, int]]) -> np.ndarray:
        """Exact patching of single (layer, pos, head) cells: [metric, cell, prompt]."""
        ...

    def close(self) -> None: ...

    @property
    def n_workers(self) -> int: ...

    @property
    def restarts(self) -> int:
        """Workers replaced after they died."""
        ...


class LocalRunner:
    """One worker in this process: the laptop path and the reference for the others."""

    restarts = 0
    n_workers = 1

    def __init__(self, spec: SweepSpec) -> None:
        self.worker = Worker(spec)

    def describe(self) -> TaskInfo:
        return self.worker.describe()

    def run(self, units: Sequence[WorkUnit]) -> Iterator[tuple[WorkUnit, np.ndarray]]:
        for unit in units:
            yield unit, self.worker.run(unit)

    def exact(self, component: str, cells: list[tuple[int, int, int]]) -> np.ndarray:
        return self.worker.exact(component, cells)

    def close(self) -> None:
        pass


def make_runner(spec: SweepSpec) -> Runner:
    if spec.runner.kind == "ray":
        from sweep.ray_runner import RayRunner  # only the Ray runner imports ray

        return RayRunner(spec)
    return LocalRunner(spec)
