"""Which job a worker takes next: the jobs of a prompt block go to the worker that holds
the block's cached runs, so each block's runs are built about once. Pure bookkeeping."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

J = TypeVar("J")


def block_of(job: Any) -> Any:
    """The prompt block a job needs, or None (a job any worker may take)."""
    return getattr(job, "block", None)


class BlockQueue(Generic[J]):
    """Jobs grouped by prompt block, in the order given. A worker takes from a block it
    owns, else claims the next unowned block, else (nothing left to claim) helps with the
    block that has the most jobs left."""

    def __init__(self, jobs: Iterable[J]) -> None:
        self.blocks: OrderedDict[Any, deque[J]] = OrderedDict()
        for job in jobs:
            self.blocks.setdefault(block_of(job), deque()).append(job)
        self.owner: dict[Any, int] = {}

    def __bool__(self) -> bool:
        return any(self.blocks.values())

    def take(self, worker: int) -> J | None:
        left = [b for b, q in self.blocks.items() if q]
        mine = [b for b in left if self.owner.get(b) == worker]
        free = [b for b in left if b not in self.owner or b is None]
        if mine:
            block = mine[0]
        elif free:
            block = free[0]
            if block is not None:
                self.owner[block] = worker
        elif left:
            block = max(left, key=lambda b: len(self.blocks[b]))
        else:
            return None
        return self.blocks[block].popleft()

    def put_back(self, job: J) -> None:
        self.blocks.setdefault(block_of(job), deque()).appendleft(job)

    def forget(self, worker: int) -> None:
        """A worker died: its blocks' cached runs went with it."""
        self.owner = {b: w for b, w in self.owner.items() if w != worker}
