"""Runners execute jobs on workers and yield results as they finish.

``describe``, ``run``, ``exact`` and the statistics are written once here; a runner
supplies ``_execute`` (jobs in, results out in completion order) and, if it holds
resources, ``close``. The driver (``sweep.driver``) owns the store: runners never write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sweep.plan import Describe, ExactJob, Job, TaskInfo, WorkUnit
from sweep.spec import SweepSpec

J = TypeVar("J", bound=Job)

WorkerFactory = Callable[[SweepSpec], Any]
"""Builds a worker (``sweep.engine.worker.Worker``, or a cheap fake in scheduler tests):
anything with ``execute(job)``."""


def default_worker(spec: SweepSpec) -> Any:
    from sweep.engine.worker import Worker  # torch and the model load only in workers

    return Worker(spec)


@dataclass(frozen=True, slots=True)
class RunnerStats:
    workers: int
    restarts: int
    """Workers replaced after they died."""
    cache_builds: tuple[int, ...] = ()
    """Per worker: prompt blocks whose runs it built."""
    nodes: tuple[str, ...] = ()
    """Per worker: the node it ran on last (Ray; empty in-process)."""
    lost: int = 0
    """Workers lost with their node (replaced on live nodes)."""
    requeued: int = 0
    """Jobs sent again because their worker died holding them (each computed twice at most:
    the lost copy never returned)."""


class Runner(ABC):
    def __init__(self, spec: SweepSpec, make_worker: WorkerFactory = default_worker) -> None:
        self.spec = spec
        self.make_worker = make_worker

    @abstractmethod
    def _execute(self, jobs: Sequence[J]) -> Iterator[tuple[J, Any]]:
        """Each job's result, in completion order; every job exactly once."""

    def describe(self) -> TaskInfo:
        """Model shape, tokens and baselines, from a worker that loaded the model."""
        [(_, info)] = list(self._execute([Describe()]))
        return info

    def run(self, units: Sequence[WorkUnit]) -> Iterator[tuple[WorkUnit, Any]]:
        """Each unit's values [metric, layer, *dims, prompt], in completion order."""
        return self._execute(units)

    def exact(self, jobs: Sequence[ExactJob]) -> Iterator[tuple[ExactJob, Any]]:
        """Exact patching of single cells, [metric, cell, prompt] per job; queued like units."""
        return self._execute(jobs)

    @property
    def stats(self) -> RunnerStats:
        return RunnerStats(workers=1, restarts=0)

    def close(self) -> None:  # noqa: B027 (the in-process runner holds nothing)
        """Release workers (and a Ray connection this runner made)."""
