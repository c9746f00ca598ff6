"""The runner contract, run against the in-process and the Ray runner with a cheap fake
worker: every job answered exactly once, exact jobs queued like units, lost workers
replaced. (The same runners with the real model: test_runners.py.)"""

from __future__ import annotations

import functools
from pathlib import Path

import fake_worker
import pytest
from fake_worker import FakeWorker
from helpers import spec_of

from sweep.errors import SweepError
from sweep.plan import ExactJob, make_plan
from sweep.runners import make_runner
from sweep.spec import GridSpec


@pytest.fixture(params=["local", "ray"])
def kind(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(fake_worker)  # tests/ is not on workers' path
    return request.param


def _runner(kind: str, *extra: str, **fake) -> object:
    spec = spec_of([f"runner={kind}", *extra])
    return make_runner(spec, functools.partial(FakeWorker, **fake))


def _units():
    info = fake_worker.info()
    grid = GridSpec(("resid_pre", "z"))
    return make_plan(grid, info.shape, info.seq_len, info.n_prompts, ("m",), 1).units


def test_every_unit_is_answered_exactly_once(kind: str) -> None:
    runner = _runner(kind, delay=0.01)
    try:
        assert runner.describe().engine == "fake"
        units = _units()
        got = list(runner.run(units))
    finally:
        runner.close()
    assert sorted(u.index for u, _ in got) == [u.index for u in units]
    for unit, result in got:
        values = result.values
        assert values.shape[1] == len(unit.layers) and (values == unit.index).all()


def test_exact_jobs_are_queued_on_every_worker(kind: str) -> None:
    runner = _runner(kind, delay=0.2)
    jobs = [ExactJob("z", layer, ((0,), (1,)), 0, 3) for layer in range(4)]
    try:
        got = dict(runner.exact(jobs))
        workers = runner.stats.workers
    finally:
        runner.close()
    assert set(got) == set(jobs)
    for job, values in got.items():
        assert values.shape == (1, 2, 3) and (values[..., :-1] == job.layer).all()
    pids = {int(v[0, 0, -1]) for v in got.values()}
    assert len(pids) == workers  # in parallel over the workers (one in-process)


@pytest.mark.parametrize("dies_on", ["unit3", "exact2"])
def test_a_lost_worker_is_replaced_and_its_job_rerun(
    ray_session, tmp_path: Path, dies_on: str
) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(fake_worker)
    runner = _runner("ray", die_on=dies_on, marker=str(tmp_path / "died"), delay=0.05)
    try:
        if dies_on.startswith("unit"):
            done = sorted(u.index for u, _ in runner.run(_units()))
            assert done == [u.index for u in _units()]
        else:
            jobs = [ExactJob("z", layer, ((0,),), 0, 3) for layer in range(4)]
            assert set(dict(runner.exact(jobs))) == set(jobs)
        assert runner.stats.restarts == 1
    finally:
        runner.close()
    assert (tmp_path / "died").exists()


def test_a_worker_that_keeps_dying_stops_the_run(ray_session, tmp_path: Path) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(fake_worker)
    runner = _runner("ray", "runner.max_worker_restarts=0", die_on="unit0",
                     marker=str(tmp_path / "died"))  # fmt: skip
    try:
        with pytest.raises(
            SweepError, match=r"worker \d died 1 times .*runner.max_worker_restarts"
        ):
            list(runner.run(_units()))
    finally:
        runner.close()
