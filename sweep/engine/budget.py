"""The memory budget: how many prompts a block holds and how many cells ride in a forward.

``runner.memory_mb`` bounds what a worker holds beyond the model's weights, whatever the
number of prompts: the cached runs of prompt blocks take at most ``CACHE_SHARE`` of it and
the batched patched forwards the rest. Each forward says what one batch row costs
(``Forward.row_bytes``); a block measures what one prompt of its cached runs costs.
Pure arithmetic, no torch.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CACHE_SHARE = 0.5
"""Of ``runner.memory_mb``, what the cached runs may hold; the forwards get the rest."""

MB = 2**20

BLOCK_TARGET = 64
"""Prompts per block when memory allows more: a unit (a block's cells of a layer block)
then takes seconds, so the first results arrive soon, a kill loses little, and the work
spreads over workers; building a block's runs (two forwards) stays cheap next to its
units, and a forward still carries many rows (cells x prompts)."""


def max_prompt_block(memory_mb: float, block_bytes: int, row_bytes: int) -> int:
    """The most prompts a block may hold: its cached runs fit the cache's share, and a
    forward of one cell over all of its prompts fits the rest."""
    budget = memory_mb * MB
    fit = min(CACHE_SHARE * budget / block_bytes, (1 - CACHE_SHARE) * budget / row_bytes)
    return max(1, int(fit))


def prompt_block(memory_mb: float, block_bytes: int, row_bytes: int, n_prompts: int) -> int:
    """Prompts per block, unless the user says: ``BLOCK_TARGET``, or fewer where
    ``runner.memory_mb`` holds fewer."""
    fits = max_prompt_block(memory_mb, block_bytes, row_bytes)
    return max(1, min(n_prompts, BLOCK_TARGET, fits))


def cells_per_forward(free_mb: float, row_bytes: int, n_prompts: int) -> int:
    """As many cells as fit ``free_mb``, at least one."""
    return max(1, int(free_mb * MB // (row_bytes * n_prompts)))


def warn_if_below_one_cell(memory_mb: float, row_bytes: int, n_prompts: int) -> None:
    cell = row_bytes * n_prompts
    if cell / MB > memory_mb:
        log.warning(
            "runner.memory_mb=%g is less than one cell needs (about %.0f MB for %d prompts); "
            "running one cell per forward",
            memory_mb,
            cell / MB,
            n_prompts,
        )
