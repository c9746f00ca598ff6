"""A cheap stand-in for ``sweep.engine.worker.Worker`` in scheduler tests: no model, values
that say which job they answer, and a way to die mid-job like a killed process."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sweep.plan import BlockData, Describe, ExactJob, ModelShape, TaskInfo, UnitResult, WorkUnit

N_PROMPTS = 3


def info() -> TaskInfo:
    return TaskInfo(
        shape=ModelShape(n_layers=4, n_heads=2),
        lengths=(5,) * N_PROMPTS,
        versions={"patchsweep": "test", "transformer_lens": "test"},
        engine="fake",
        block_bytes=1,
        row_bytes=1,
    )


class FakeWorker:
    """``execute(job)``: a unit's values are its index; an exact job's are its layer, and
    its last entry is this process's pid. Dies (``os._exit``) on the job ``die_on`` names,
    once per marker file, as a SIGKILLed worker would."""

    def __init__(self, spec: Any, die_on: str = "", marker: str = "", delay: float = 0.0) -> None:
        self.die_on, self.marker, self.delay = die_on, marker, delay

    def execute(self, job: Any) -> Any:
        time.sleep(self.delay)
        if self.die_on and self.die_on == _name(job) and not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)
        if isinstance(job, Describe):
            return info()
        if isinstance(job, ExactJob):
            out = np.full((1, len(job.cells), job.prompt_stop - job.prompt_start), job.layer, float)
            out[..., -1] = os.getpid()
            return out
        assert isinstance(job, WorkUnit)
        grid = [len(v) for _, v in job.grid]
        values = np.full((1, len(job.layers), *grid, job.n_prompts), job.index, dtype=np.float32)
        n = job.n_prompts
        block = BlockData(job.prompt_start, np.ones((1, n)), np.zeros((1, n)), [["a"]] * n,
                          [["b"]] * n)  # fmt: skip
        return UnitResult(values, block)


def _name(job: Any) -> str:
    if isinstance(job, WorkUnit):
        return f"unit{job.index}"
    if isinstance(job, ExactJob):
        return f"exact{job.layer}"
    return "describe"
