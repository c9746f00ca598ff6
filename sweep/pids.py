"""Whether a process of this host still runs: leases and leftover temporary files name
their owner's pid, and only a dead owner's are taken over or removed."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
