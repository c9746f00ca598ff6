"""``sweep.analysis``: effects, statistics and top cells of a store (``sweep.results.analysis``)."""

from sweep.results.analysis import (
    bootstrap_ci,
    cell_of,
    components,
    default_min_prompts,
    effect,
    effect_summary,
    normalized,
    reached,
    summarize,
    top_cells,
)

__all__ = [
    "bootstrap_ci",
    "cell_of",
    "components",
    "default_min_prompts",
    "effect",
    "effect_summary",
    "normalized",
    "reached",
    "summarize",
    "top_cells",
]
