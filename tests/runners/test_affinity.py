"""A prompt block's jobs go to the worker holding its cached runs."""

from __future__ import annotations

from types import SimpleNamespace

from sweep.runners.affinity import BlockQueue


def _jobs(blocks: int, per_block: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(block=b * 10, i=i) for b in range(blocks) for i in range(per_block)]


def test_each_block_stays_with_one_worker_until_only_stealing_is_left() -> None:
    queue = BlockQueue(_jobs(blocks=4, per_block=5))
    took: dict[int, list] = {0: [], 1: []}
    while queue:  # the two workers take turns, as results come back
        for w in (0, 1):
            job = queue.take(w)
            if job is not None:
                took[w].append(job.block)
    blocks = {w: set(b) for w, b in took.items()}
    assert blocks[0] == {0, 20} and blocks[1] == {10, 30}
    assert sorted(took[0] + took[1]) == sorted(j.block for j in _jobs(4, 5))


def test_an_idle_worker_helps_with_the_longest_block() -> None:
    queue = BlockQueue(_jobs(blocks=1, per_block=6))
    assert queue.take(0).block == 0
    assert queue.take(1).block == 0  # nothing unowned is left: it helps worker 0
    assert queue.owner == {0: 0}


def test_a_dead_workers_blocks_and_jobs_go_to_others() -> None:
    queue = BlockQueue(_jobs(blocks=2, per_block=2))
    first = queue.take(0)
    queue.put_back(first)
    queue.forget(0)
    assert queue.take(1) is first and queue.owner[0] == 1


def test_jobs_of_no_block_go_to_any_worker() -> None:
    queue = BlockQueue([SimpleNamespace(), SimpleNamespace()])
    assert queue.take(0) is not None and queue.take(1) is not None and not queue
