"""The memory budget: how many cells ride in one patched forward.

``runner.memory_mb`` bounds the activations of one batched forward; each forward says what
one batch row costs (``Forward.row_bytes``) and a cell is one row per prompt.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def cells_per_forward(memory_mb: float, row_bytes: int, n_prompts: int) -> int:
    """As many cells as fit the budget, at least one."""
    return max(1, int(memory_mb * 2**20 // (row_bytes * n_prompts)))


def warn_if_below_one_cell(memory_mb: float, row_bytes: int, n_prompts: int) -> None:
    cell = row_bytes * n_prompts
    if cell / 2**20 > memory_mb:
        log.warning(
            "runner.memory_mb=%g is less than one cell needs (about %.0f MB for %d prompts); "
            "running one cell per forward",
            memory_mb,
            cell / 2**20,
            n_prompts,
        )
