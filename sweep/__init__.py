"""patchsweep: activation-patching sweeps over transformer language models, into zarr.

Exports are loaded on first use, so ``import sweep`` (and the results side: opening a
store, analysis, plots, status) imports no torch, TransformerLens or Hydra.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "run": "sweep.driver",
    "run_config": "sweep.driver",
    "compose_config": "sweep.driver",
    "open_results": "sweep.results.dataset",
    "open_multirun": "sweep.results.multirun",
    "Sweep": "sweep.session",
    "load_model": "sweep.session",
    "status": "sweep.store.status",
}

_MODULES = ("analysis", "figures")
"""Submodules reachable as ``sweep.analysis`` after a bare ``import sweep``."""

__all__ = ["__version__", *_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"sweep.{name}")
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
