"""``sweep.analysis``: effects, statistics and top cells of a store (``sweep.results.analysis``)."""

from sweep.results.analysis import (
    bootstrap_ci,
    cell_of,
    components,
    effect,
    effect_summary,
    normalized,
    summarize,
    top_cells,
)

__all__ = [
    "bootstrap_ci",
    "cell_of",
    "components",
    "effect",
    "effect_summary",
    "normalized",
    "summarize",
    "top_cells",
]
