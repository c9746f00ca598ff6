"""patchsweep: activation-patching sweeps over transformer language models, into zarr."""

__version__ = "0.1.0"

from sweep.api import compose_config, run, run_config  # noqa: E402
from sweep.store import open_results  # noqa: E402

__all__ = ["__version__", "compose_config", "open_results", "run", "run_config"]
