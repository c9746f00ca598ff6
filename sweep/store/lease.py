"""One driver at a time: a lease file inside the store naming its holder.

The holder (host, pid, start time) renews the lease while it runs and removes it when it
ends. Another driver is refused with the holder's name, unless the holder is gone: a pid
that no longer runs on this host, or, from another host, a lease not renewed for
``store.lease_timeout_s``. Taking a stale lease over, and each renewal, is a
compare-and-swap (``Backend.replace_if``): on S3 a PUT with ``If-Match``, on a local
filesystem a check-and-write under ``flock``; so two drivers that find the same stale lease
cannot both win, and a renewal never overwrites a lease another driver took.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from sweep.errors import StoreBusyError
from sweep.pids import pid_alive
from sweep.store.backends import Backend

log = logging.getLogger(__name__)

LEASE = "_patchsweep/lease.json"
LOCK = "_patchsweep/lease.lock"


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: float
    """When the holder took the lease (seconds since the epoch)."""
    renewed: float
    token: str
    """Tells this holder's lease from a later one of the same process."""

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {self.pid} on {self.host}, since {since} UTC"

    def gone(self, timeout_s: float, now: float) -> bool:
        """The holder died: its pid is dead on this host, or it stopped renewing."""
        if self.host == socket.gethostname():
            return not pid_alive(self.pid)
        return now - self.renewed > timeout_s


def read_holder(backend: Backend) -> Holder | None:
    try:
        return _parse(backend.read(LEASE))
    except FileNotFoundError:
        return None


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError, KeyError):
        return None


class Lease:
    """This process's claim on a store; ``acquire`` before writing, ``release`` at the end."""

    def __init__(self, backend: Backend, timeout_s: float) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        now = time.time()
        self.me = Holder(socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex)
        self.held = False
        self.lost_to: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _data(self) -> bytes:
        return json.dumps(asdict(self.me)).encode()

    def acquire(self) -> None:
        """Take the lease or raise StoreBusyError naming the live holder."""
        with self.backend.locked(LOCK):
            if not self.backend.create_exclusive(LEASE, self._data()):
                self._take_over()
        self._start()

    def _take_over(self) -> None:
        """The lease file exists: take it if its holder is gone, by compare-and-swap."""
        try:
            data, tag = self.backend.read_tagged(LEASE)
        except FileNotFoundError:  # released since: create it, or someone else just did
            if self.backend.create_exclusive(LEASE, self._data()):
                return
            data, tag = self.backend.read_tagged(LEASE)
        other = _parse(data)
        if other is not None and not other.gone(self.timeout_s, time.time()):
            raise StoreBusyError(
                f"store.path: {self.backend} is in use by another sweep "
                f"({other.describe()}); wait for it to finish, or stop it "
                "(its lease is taken over once its process is gone)"
            )
        if not self.backend.replace_if(LEASE, self._data(), tag):
            winner = read_holder(self.backend)
            raise StoreBusyError(
                f"store.path: {self.backend}: another sweep "
                f"({winner.describe() if winner else 'unknown'}) took over its stale lease "
                "at the same moment; wait for that sweep to finish"
            )
        if other is not None:
            log.warning("took over the store's lease from %s (gone)", other.describe())

    def adopt(self) -> None:
        """The lease file was written with a new store (``data()``): start holding it."""
        self._start()

    def data(self) -> bytes:
        return self._data()

    def _start(self) -> None:
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="lease")
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            self.renew()

    def renew(self) -> None:
        """Refresh ``renewed``; notice when another driver took the lease over."""
        try:
            data, tag = self.backend.read_tagged(LEASE)
            current = _parse(data)
        except FileNotFoundError:
            current = None
        except OSError as e:  # a vanished mount or endpoint: the next renewal decides
            log.warning("could not read the store's lease: %s", e)
            return
        if current is None or current.token != self.me.token:
            self.lost_to = current
            return
        renewed = Holder(**{**asdict(self.me), "renewed": time.time()})
        try:
            if self.backend.replace_if(LEASE, json.dumps(asdict(renewed)).encode(), tag):
                self.me = renewed
            else:  # taken over between our read and our write
                self.lost_to = read_holder(self.backend)
        except OSError as e:  # a full disk or a vanished mount: the next check decides
            log.warning("could not renew the store's lease: %s", e)

    def check(self) -> None:
        """Raise if another driver took the lease over (this one stalled past the timeout)."""
        if self.lost_to is not None:
            raise StoreBusyError(
                f"store.path: {self.backend} was taken over by another sweep "
                f"({self.lost_to.describe()}) while this one stalled; stopping without writing"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held:
            current = read_holder(self.backend)
            if current is not None and current.token == self.me.token:
                self.backend.remove(LEASE)
        self.held = False
