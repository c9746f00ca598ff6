"""Patches and estimates are written over a component's named axes: a new dim is a row of
the component table and nothing else. Checked against hand-indexed tensors."""

from __future__ import annotations

import pytest
import torch

from sweep.components import COMPONENTS, Component, Layout
from sweep.engine.cells import (
    at_reads,
    gather_cells,
    hook_patch,
    make_batch,
    packed_patch,
    per_cell,
    read_positions,
)
from sweep.engine.forward.suffix import Rows

NEURONS = Layout("neurons", ("pos", "neuron"), "pos", ("pos",))
MLP_NEURON = Component("mlp_neuron", "blocks.{layer}.mlp.hook_post", NEURONS, ("pos", "neuron"))
"""A component the table does not have: one MLP neuron at one position."""


def test_a_new_dim_patches_through_the_hooked_and_the_packed_layout() -> None:
    lengths = torch.tensor([4, 3])
    src = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)  # [prompt, pos, neuron]
    cells = [(1, 2), (-1, 4)]  # position 1 neuron 2; each prompt's last position, neuron 4
    b = make_batch(MLP_NEURON, cells, lengths)
    assert b.prompt.tolist() == [0, 1, 0, 1]
    assert b.index["pos"].tolist() == [1, 1, 3, 2]  # -1 resolved per prompt
    act = torch.zeros(4, 4, 5)
    hook_patch(MLP_NEURON, src, b)(act, None)
    for r, (p, pos, n) in enumerate([(0, 1, 2), (1, 1, 2), (0, 3, 4), (1, 2, 4)]):
        assert act[r, pos, n] == src[p, pos, n]
        assert act[r].count_nonzero() == (1 if src[p, pos, n] else 0)
    rows = Rows.make(b.prompt, b.index["pos"], lengths[b.prompt] - 1)
    packed = torch.zeros(len(rows.tok_row), 5)
    packed_patch(MLP_NEURON, src, b, rows)(packed)
    for t in range(len(rows.tok_row)):
        r, pos = int(rows.tok_row[t]), int(rows.tok_pos[t])
        want = torch.zeros(5)
        if pos == int(b.index["pos"][r]):
            n = int(b.index["neuron"][r])
            want[n] = src[int(b.prompt[r]), pos, n]
        assert torch.equal(packed[t], want)


def test_estimates_sum_each_cell_and_gather_it_per_prompt() -> None:
    products = torch.rand(2, 3, 6, 4, 8)  # [metric, prompt, pos, head, d_head]
    z = COMPONENTS["z"]
    assert torch.allclose(per_cell(z, products), products.sum((2, 4)))
    by_pos = per_cell(COMPONENTS["z_by_pos"], products)
    assert torch.allclose(by_pos, products.sum(4))
    lengths = torch.tensor([6, 2, 4])
    b = make_batch(COMPONENTS["z_by_pos"], [(3, 1), (-1, 0)], lengths)
    got = gather_cells(COMPONENTS["z_by_pos"], by_pos, b)  # [metric, cell, prompt]
    assert torch.allclose(got[:, 0, 0], by_pos[:, 0, 3, 1])
    assert got[:, 0, 1].isnan().all()  # prompt 1 has no position 3
    assert torch.allclose(got[:, 1, 1], by_pos[:, 1, 1, 0])  # its own last position
    assert torch.allclose(got[:, 1, 2], by_pos[:, 2, 3, 0])


@pytest.mark.parametrize("reads", [1, 3])
def test_at_reads_picks_each_rows_read_positions(reads: int) -> None:
    """One read: each row's last position; several: the ``reads`` positions ending there,
    clamped at 0 for a prompt shorter than the reads; ``rows`` picks other rows of ``act``."""
    act = torch.randn(4, 6, 5)
    last = torch.tensor([5, 1, 3, 0])
    at = read_positions(last, reads)
    want = [[act[r, max(p - k, 0)] for k in reversed(range(reads))] for r, p in enumerate(last)]
    got = at_reads(act, at)
    assert got.shape == ((4, 5) if reads == 1 else (4, reads, 5))
    want_t = torch.stack([torch.stack(w) for w in want])
    torch.testing.assert_close(got.reshape(4, reads, 5), want_t)
    rows = torch.tensor([3, 3, 0, 1])
    other = at_reads(act, at, rows).reshape(4, reads, 5)
    for i, r in enumerate(rows.tolist()):
        for j, k in enumerate(reversed(range(reads))):
            torch.testing.assert_close(other[i, j], act[r, max(int(last[i]) - k, 0)])
