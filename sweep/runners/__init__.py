"""Runners: in-process and Ray, behind one interface (``sweep.runners.base.Runner``).

Add a runner: one module with a ``Runner`` subclass that supplies ``_execute``, chosen in
``make_runner`` (``choose.py``); the contract suite in tests/runners/ runs against it.
"""

from sweep.runners.base import Runner, RunnerStats
from sweep.runners.choose import make_runner

__all__ = ["Runner", "RunnerStats", "make_runner"]
