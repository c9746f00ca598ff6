"""Cells as batch rows, and patches written over the component's named axes.

Row r of a batch applies one cell (an index along each of the component's dims) to one
prompt. Nothing here branches on a component's name or kind: an activation's axes come
from its ``Layout``, and a dim indexes the axis of the same name; axes that are not dims
are patched whole. Pure tensor logic, no model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sweep.components import Component
from sweep.plan import NAMED

Cell = tuple[int, ...]
"""One index per dim of the component, in its ``dims`` order."""


@dataclass(frozen=True)
class Batch:
    """The rows of one patched forward: ``len(cells)`` stacked copies of the prompts."""

    prompt: torch.Tensor
    """[R] prompt (index into the prompt block) each row copies."""
    index: dict[str, torch.Tensor]
    """dim -> [R] index along that dim; positions made absolute for each row's prompt."""
    valid: torch.Tensor
    """[R] the cell exists for this row's prompt (a position within the prompt)."""
    n_cells: int

    @property
    def rows(self) -> int:
        return int(self.prompt.shape[0])


def make_batch(
    c: Component, cells: Sequence[Cell], lengths: torch.Tensor, named: torch.Tensor | None = None
) -> Batch:
    """Rows cell-major: cell i covers rows ``i * n .. (i + 1) * n - 1``. A negative
    position counts from each prompt's own end (-1: its last token); ``NAMED + k`` is the
    k-th named position, in ``named`` [prompt, name] (-1 where a prompt has none)."""
    n, g = int(lengths.shape[0]), len(cells)
    device = lengths.device
    prompt = torch.arange(n, device=device).repeat(g)
    valid = torch.ones(n * g, dtype=torch.bool, device=device)
    index = {}
    for i, dim in enumerate(c.dims):
        v = torch.tensor([cell[i] for cell in cells], device=device).repeat_interleave(n)
        if dim == "pos":
            length = lengths[prompt]
            v = torch.where(v < 0, length + v, v)
            if named is not None and named.shape[1] and bool((v >= NAMED).any()):
                k = (v - NAMED).clamp(0, named.shape[1] - 1)
                v = torch.where(v >= NAMED, named[prompt, k], v)
            valid &= (v >= 0) & (v < length)
        index[dim] = v
    return Batch(prompt, index, valid, g)


def _axes_index(c: Component, axes: Sequence[str], index: dict[str, torch.Tensor], r: Any) -> list:
    return [index[a][r] if a in c.dims else slice(None) for a in axes]


def hook_patch(c: Component, src: torch.Tensor, b: Batch) -> Callable[[torch.Tensor, Any], Any]:
    """A TransformerLens hook for activations laid out [rows, *layout axes]: each valid
    row's cell takes the source's value at that row's prompt (``src`` is [prompt, ...])."""
    r = torch.nonzero(b.valid).flatten()
    rest = _axes_index(c, c.layout.axes, b.index, r)
    dst, from_src = (r, *rest), (b.prompt[r], *rest)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act[dst] = src[from_src].to(act.dtype)
        return act

    return hook


def packed_patch(
    c: Component, src: torch.Tensor, b: Batch, rows: Any
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same patch for the packed suffix tokens of ``rows`` (a
    ``sweep.engine.forward.suffix.Rows``): an activation with a ``pos`` axis is
    [token, *other axes]; one without (the pattern) stays [rows, *axes]."""
    axes = c.layout.axes
    if axes[0] != "pos":
        fn = hook_patch(c, src, b)
        return lambda act: fn(act, None)
    tok, r, pos = packed_tokens(c, b, rows)
    rest = _axes_index(c, axes[1:], b.index, r)
    dst, from_src = (tok, *rest), (b.prompt[r], pos, *rest)

    def patch(act: torch.Tensor) -> torch.Tensor:
        act[dst] = src[from_src].to(act.dtype)
        return act

    return patch


def packed_tokens(
    c: Component, b: Batch, rows: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The packed suffix tokens a patch writes, with each one's row and position: the
    cell's position of each valid row, or every recomputed position of it."""
    if c.has("pos"):
        r = torch.nonzero(b.valid).flatten()
        pos = b.index["pos"][r]
        return rows.offset[r] + pos - rows.start[r], r, pos
    tok = torch.nonzero(b.valid[rows.tok_row]).flatten()
    return tok, rows.tok_row[tok], rows.tok_pos[tok]


def per_cell(c: Component, products: torch.Tensor) -> torch.Tensor:
    """Sum [metric, prompt, *layout axes] over each cell: [metric, prompt, *dims]."""
    whole = [2 + i for i, a in enumerate(c.layout.axes) if a not in c.dims]
    return products.sum(whole) if whole else products


def gather_cells(c: Component, values: torch.Tensor, b: Batch) -> torch.Tensor:
    """[metric, prompt, *dims] -> [metric, cell, prompt] at the batch's rows (NaN where a
    cell does not exist for a prompt)."""
    idx = [b.index[d].clamp(min=0) if d == "pos" else b.index[d] for d in c.dims]
    idx = [i.clamp(max=values.shape[2 + k] - 1) for k, i in enumerate(idx)]
    out = values[(slice(None), b.prompt, *idx)]  # type: ignore[index]
    out = out.masked_fill(~b.valid, float("nan"))
    return out.reshape(out.shape[0], b.n_cells, -1)


def position_sums(
    c: Component, act: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over prompts at each position of the prompts long enough to have it, and how
    many there were: [1, *act axes] each, both full size (a mean over many prompts adds
    these up, padded to the longest prompt)."""
    dim = 1 + c.layout.axes.index(c.layout.query_axis)
    seq = act.shape[dim]
    valid = torch.arange(seq, device=act.device)[None, :] < lengths.to(act.device)[:, None]
    shape = [act.shape[0]] + [1] * (act.ndim - 1)
    shape[dim] = seq
    w = valid.reshape(shape).to(act.dtype)
    total = (act * w).sum(0, keepdim=True)
    return total, w.sum(0, keepdim=True).expand_as(total)


def position_mean(c: Component, act: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over prompts at each position, over the prompts long enough to have it:
    one row per prompt of ``act``, so it patches like any other source."""
    total, count = position_sums(c, act, lengths)
    return (total / count.clamp(min=1)).expand_as(act)


def pad_tokens(c: Component, act: torch.Tensor, width: int) -> torch.Tensor:
    """``act`` with its token axes zero-padded (or cut) to ``width``."""
    pads: list[int] = []
    for i, a in reversed(list(enumerate(c.layout.axes))):
        pads += [0, width - act.shape[1 + i]] if a in c.layout.token_axes else [0, 0]
    return torch.nn.functional.pad(act, pads)


def read_positions(last: torch.Tensor, reads: int) -> torch.Tensor:
    """``last`` [R] itself for one read; else [R, reads] the positions ``last - reads + 1
    .. last`` (clamped at 0: a prompt shorter than the reads pads its first ones, which
    the metric masks with answer id -1)."""
    if reads == 1:
        return last
    steps = torch.arange(1 - reads, 1, device=last.device)
    return (last[:, None] + steps).clamp(min=0)


def at_reads(act: torch.Tensor, at: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``act[rows, at]``: each row's activations at its read positions ``at`` (``[R]`` for one
    read, ``[R, reads]`` for several, as ``read_positions`` gives), ``[R, ...]`` or
    ``[R, reads, ...]``; ``rows`` (the rows of ``act`` to read) defaults to ``0..R-1``."""
    if rows is None:
        rows = torch.arange(len(at), device=at.device)
    return act[rows[:, None] if at.dim() == 2 else rows, at]
