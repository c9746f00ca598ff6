"""The in-process runner: one worker, the laptop path and the reference for the others."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sweep.runners.base import J, Runner, RunnerStats, WorkerFactory, default_worker
from sweep.spec import SweepSpec


class LocalRunner(Runner):
    def __init__(self, spec: SweepSpec, make_worker: WorkerFactory = default_worker) -> None:
        super().__init__(spec, make_worker)
        self.worker = make_worker(spec)

    def _execute(self, jobs: Sequence[J]) -> Iterator[tuple[J, Any]]:
        for job in jobs:
            yield job, self.worker.execute(job)

    @property
    def stats(self) -> RunnerStats:
        stats: dict[str, int] = getattr(self.worker, "stats", dict)()
        return RunnerStats(workers=1, restarts=0, cache_builds=(stats.get("cache_builds", 0),))
