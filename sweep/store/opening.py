"""The one way a sweep enters its store, in the order a sweep needs it: recognise the path
and, for an existing store, take its lease and check it holds this config before any
model loads; once the plan is known, check its work units and create the store or grow
it; give the lease back at the end, whatever happened."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sweep.errors import StoreMismatchError
from sweep.plan import Plan, TaskInfo
from sweep.store.backends import Backend, backend_for
from sweep.store.create import create, grow
from sweep.store.layout import (
    StoreMeta,
    check_only_store,
    check_same,
    check_units,
    is_store,
    root_attrs,
    store_latents,
    store_sizes,
)
from sweep.store.lease import Lease
from sweep.store.writer import ResultStore

log = logging.getLogger(__name__)


class SweepStore:
    """A sweep's store, entered with ``with SweepStore(...) as door: door.enter(want)``.

    ``overwrite``: a store of another config (or layout) is replaced, and only a store of
    patchsweep's alone; else it is refused in one line.
    """

    def __init__(self, path: Any, lease_timeout_s: float, overwrite: bool) -> None:
        self.backend: Backend = backend_for(path)
        self.backend.check_writable()
        self.lease = Lease(self.backend, lease_timeout_s)
        self.overwrite = overwrite
        self.exists = False
        self.replace = False
        self.entered = False

    def __enter__(self) -> SweepStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lease.release()

    def enter(self, want: dict[str, Any]) -> None:
        """Recognise the path; a store there is leased (a second driver fails at once) and
        checked to hold ``want``, the config's fingerprint."""
        self.exists = is_store(self.backend)
        self.entered = True
        if self.exists:
            self.lease.acquire()
            self.replace = self._replaced(lambda: check_same(self.backend, want))

    @property
    def resumes(self) -> bool:
        """Whether this run goes on with the store there (not a new or replaced one)."""
        return self.exists and not self.replace

    def prompt_block(self) -> int | None:
        """The resumed store's prompts per block (its units are laid out on them)."""
        return int(root_attrs(self.backend)["prompt_block"]) if self.resumes else None

    def latents(self) -> tuple[int, ...]:
        """The resumed store's SAE latents (``grid.latents=top:N`` chose them when it was
        made: they stay the store's wherever it resumes)."""
        return store_latents(self.backend) if self.resumes else ()

    def sizes(self) -> tuple[int, ...]:
        """The resumed circuit store's sizes, in its order (first in any new plan)."""
        return store_sizes(self.backend) if self.resumes else ()

    def open(
        self, plan_for: Callable[[], Plan], info: TaskInfo, meta: StoreMeta
    ) -> tuple[ResultStore, Plan]:
        """The store to write, and the plan it holds: ``plan_for`` plans on what
        ``prompt_block`` and ``sizes`` say, and is asked again if the store is replaced."""
        assert self.entered, "enter(fingerprint) first: it recognises and leases the store"
        plan = plan_for()
        if self.resumes and plan.axes.ranking is None:
            if self._replaced(lambda: check_units(self.backend, plan)):
                self.replace = True
                plan = plan_for()
        if not self.resumes:
            create(self.backend, plan, info, meta, self.lease, self.replace)
        elif plan.axes.ranking is not None and grow(self.backend, plan, meta.config_yaml):
            log.info("added circuit sizes to the store: it holds %s", plan.axes.coords["size"])
        return ResultStore(self.backend, self.lease), plan

    def _replaced(self, check: Callable[[], None]) -> bool:
        """Whether a store that ``check`` finds of another config (or layout) is to be
        replaced: only with ``overwrite``, and only a store of patchsweep's alone."""
        try:
            check()
        except StoreMismatchError:
            if not self.overwrite:
                raise
            check_only_store(self.backend)
            return True
        return False
