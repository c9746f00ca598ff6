"""Ctrl-C and SIGTERM as one exception, raised where it is safe to stop.

Python raises a signal's exception wherever the main thread happens to be. Inside a chunk
write that would split a chunk from its done mark; inside Ray's C calls it corrupts Ray's
state (a SystemError, or a crash at exit); inside ``ray.init`` it leaves Ray's agents
running. Code that must not be cut runs in ``deferred()``: a signal that arrives there is
kept and raised when the outermost deferred block ends, or at a ``check()`` inside it
(loops that wait on Ray poll it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Signalled(BaseException):
    """A signal stopped the work. A BaseException, like KeyboardInterrupt, so that no
    library's ``except Exception`` swallows it; the driver and the command line turn it
    into one line and exit 128 + signum (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


class _State:
    depth = 0
    pending: int | None = None


_state = _State()


def _handler(signum: int, frame: Any) -> None:
    if _state.depth:
        _state.pending = signum
        return
    raise Signalled(signum)


def check() -> None:
    """Raise the signal kept by ``deferred()``, if one arrived."""
    if _state.pending is not None:
        signum, _state.pending = _state.pending, None
        raise Signalled(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Signals wait until the block ends (or its next ``check()``)."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    if not _state.depth:
        check()


@contextmanager
def catching() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Signalled`` in the block; the old handlers come back
    after. Only the main thread receives signals, so elsewhere this does nothing."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is _handler:  # not here, or already
        yield
        return
    _state.pending = None
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state.pending = None
