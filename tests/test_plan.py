"""The planner is pure: check coverage, chunk sizing and restriction handling directly."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from sweep.components import COMPONENTS
from sweep.errors import ConfigError
from sweep.plan import UNIT_ROWS, ModelShape, make_plan
from sweep.spec import GridSpec

SHAPE = ModelShape(n_layers=12, n_heads=12)


def grid(*names: str, layers=None, positions=None, heads=None) -> GridSpec:
    return GridSpec(names, layers, positions, heads)


def test_every_cell_is_in_exactly_one_unit() -> None:
    plan = make_plan(
        grid(*COMPONENTS),
        SHAPE,
        seq_len=15,
        n_prompts=8,
        metrics=("logit_diff",),
        chunk_bytes=64 * 1024,
    )
    for c in plan.components:
        units = [u for u in plan.units if u.component == c.name]
        layer_cells = [(layer, cell) for u in units for layer in u.layers for cell in u.cells]
        assert len(layer_cells) == len(set(layer_cells))
        expected = 12 * (15 if c.has("pos") else 1) * (12 if c.has("head") else 1)
        assert len(layer_cells) == expected
        # Units tile the layer axis in chunk-sized steps, so each writes one whole chunk.
        step = plan.chunks(c)[1]
        assert [u.layer_start for u in units] == list(range(0, 12, step))
    assert [u.index for u in plan.units] == list(range(len(plan.units)))


def test_layers_are_grouped_up_to_the_chunk_size_and_the_unit_rows() -> None:
    plan = make_plan(
        grid("resid_pre", "z_by_pos", "z"),
        SHAPE,
        seq_len=15,
        n_prompts=8,
        metrics=("logit_diff",),
        chunk_bytes=256 * 1024,
    )
    # z: 12 heads x 8 prompts = 96 rows a layer: 10 layers to a unit (960 rows).
    assert plan.chunks(COMPONENTS["z"]) == (1, 10, 12, 8)
    # resid_pre: 15 x 8 = 120 rows a layer: 8 layers make UNIT_ROWS (1024), so a unit
    # takes seconds whatever the chunk size allows.
    assert plan.chunks(COMPONENTS["resid_pre"]) == (1, UNIT_ROWS // 120, 15, 8)
    # z_by_pos: 15 x 12 x 8 = 1,440 rows a layer: one layer per unit.
    assert plan.chunks(COMPONENTS["z_by_pos"]) == (1, 1, 15, 12, 8)
    big = make_plan(
        grid("z_by_pos"),
        SHAPE,
        seq_len=512,
        n_prompts=64,
        metrics=("logit_diff",),
        chunk_bytes=1024 * 1024,
    )
    # 512 * 12 * 64 * 4 B = 1.5 MB per layer: one layer per chunk.
    assert big.chunks(COMPONENTS["z_by_pos"])[1] == 1
    assert len(big.units) == 12


def test_restrictions_and_negative_positions() -> None:
    plan = make_plan(
        grid("z_by_pos", layers=(3, 7), positions=(0, -1), heads=(5,)),
        SHAPE,
        seq_len=15,
        n_prompts=2,
        metrics=("logit_diff",),
        chunk_bytes=1,
    )
    assert plan.axes.layers == (3, 7)
    # -1: each prompt's last; kv_head (unrestricted) is every key/value head, used only by
    # the keys and values of a grouped-query model.
    assert plan.axes.coords == {"pos": (0, -1), "head": (5,), "kv_head": tuple(range(12))}
    assert [(u.layers, u.grid) for u in plan.units] == [
        ((3,), (("pos", (0, -1)), ("head", (5,)))),
        ((7,), (("pos", (0, -1)), ("head", (5,)))),
    ]
    assert plan.units[0].cells == [(0, 5), (-1, 5)]
    assert plan.shape(COMPONENTS["z_by_pos"]) == (1, 2, 2, 1, 2)


def test_out_of_range_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"grid.layers: \[12\] out of range; there are 12 layers"):
        make_plan(grid("z", layers=(12,)), SHAPE, 15, 2, ("logit_diff",), 1024)
    with pytest.raises(ConfigError, match=r"grid.positions: \[-16\] out of range"):
        make_plan(grid("resid_pre", positions=(0, -16)), SHAPE, 15, 2, ("logit_diff",), 1024)


def test_units_are_frozen() -> None:
    plan = make_plan(grid("z"), SHAPE, 15, 2, ("logit_diff",), 1024)
    with pytest.raises(FrozenInstanceError):
        plan.units[0].layers = (0,)  # type: ignore[misc]


def test_prompt_blocks_tile_the_prompt_axis() -> None:
    plan = make_plan(grid("z"), SHAPE, 15, 10, ("logit_diff",), 1024, prompt_block=4)
    assert plan.prompt_blocks == [(0, 4), (4, 8), (8, 10)]
    assert plan.chunks(COMPONENTS["z"])[-1] == 4
    spans = sorted({(u.prompt_start, u.prompt_stop) for u in plan.units})
    assert spans == plan.prompt_blocks
    for u in plan.units:  # every layer block of every prompt block, once
        assert sum(1 for v in plan.units if (v.layers, v.block) == (u.layers, u.block)) == 1
