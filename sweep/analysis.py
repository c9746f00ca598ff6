"""``sweep.analysis``: effects, statistics and top cells of a store (``sweep.results.analysis``)."""

from sweep.results.analysis import (
    Scale,
    bootstrap_ci,
    cell_of,
    components,
    default_min_prompts,
    effect,
    effect_summary,
    gap_warning,
    is_estimate,
    normalized,
    reached,
    scale,
    scaled,
    summarize,
    top_cells,
    verified,
)

__all__ = [
    "Scale",
    "bootstrap_ci",
    "cell_of",
    "components",
    "default_min_prompts",
    "effect",
    "effect_summary",
    "gap_warning",
    "is_estimate",
    "normalized",
    "reached",
    "scale",
    "scaled",
    "summarize",
    "top_cells",
    "verified",
]
