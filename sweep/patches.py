"""Patch functions: write each batch row's cell from the source run into an activation.

Row r of a batch is one cell (a position and/or head) applied to one prompt. Two layouts:
the model's own hooks see [rows, pos, ...] activations; the suffix forward sees packed
tokens (see ``sweep.suffix.Rows``). Pure tensor logic, no model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sweep.components import Component
from sweep.suffix import Rows


def hook_patch(
    c: Component, src: torch.Tensor, prompt: torch.Tensor, pos: torch.Tensor, head: torch.Tensor
) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """A TransformerLens hook for activations laid out [rows, pos, ...]."""
    rows = torch.arange(prompt.shape[0], device=prompt.device)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if c.act_kind == "resid":
            act[rows, pos] = src[prompt, pos].to(act.dtype)
        elif c.act_kind == "pattern":
            act[rows, head] = src[prompt, head].to(act.dtype)
        elif c.has_pos:
            act[rows, pos, head] = src[prompt, pos, head].to(act.dtype)
        else:
            act[rows, :, head] = src[prompt, :, head].to(act.dtype)
        return act

    return hook


def packed_patch(
    c: Component, src: torch.Tensor, rows: Rows, pos: torch.Tensor, head: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same patch for the suffix forward's packed tokens ([R, H, S, S] for the pattern).

    A cell past a prompt's last position patches nothing (its value is masked later).
    """
    if c.act_kind == "pattern":
        r = torch.arange(len(head), device=head.device)

        def pattern(act: torch.Tensor) -> torch.Tensor:
            act[r, head] = src[rows.prompt, head].to(act.dtype)
            return act

        return pattern
    if c.has_pos:
        ok = pos <= rows.last
        tok = (rows.offset + pos - rows.start)[ok]
        src_prompt, src_pos, tok_head = rows.prompt[ok], pos[ok], head[ok]
    else:  # every position of the row
        tok = torch.arange(len(rows.tok_row), device=head.device)
        src_prompt, src_pos, tok_head = rows.tok_prompt, rows.tok_pos, head[rows.tok_row]

    def patch(act: torch.Tensor) -> torch.Tensor:
        if c.act_kind == "resid":
            act[tok] = src[src_prompt, src_pos].to(act.dtype)
        else:
            act[tok, tok_head] = src[src_prompt, src_pos, tok_head].to(act.dtype)
        return act

    return patch
