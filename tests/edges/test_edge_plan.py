"""Planning an edge sweep: patterns select nodes, every edge lands in exactly one unit, and
choices that name nothing are refused by key (pure: no model)."""

from __future__ import annotations

import pytest

from sweep.edges.graph import GraphShape, edges
from sweep.errors import ConfigError
from sweep.plan import ModelShape, make_plan
from sweep.spec import EdgeGridSpec


def plan(shape: ModelShape, grid: EdgeGridSpec | None = None, chunk_kb: int = 4, block: int = 3):
    return make_plan(grid or EdgeGridSpec(), shape, 15, 8, ("logit_diff",), 1024 * chunk_kb,
                     block)  # fmt: skip


def test_every_edge_of_gpt2_small_is_in_exactly_one_unit_per_prompt_block() -> None:
    p = plan(ModelShape(12, 12))
    assert p.shape(p.components[0]) == (1, 12 * 37 + 1, 1 + 12 * 13, 8)
    per_block: dict[int, list] = {}
    for u in p.units:
        per_block.setdefault(u.prompt_start, []).extend(p.axes.edges_of(u))
    assert sorted(per_block) == [0, 3, 6]
    want = edges(GraphShape(12, 12))
    for got in per_block.values():
        assert len(got) == len(want) == 32491 and set(got) == set(want)
    assert sum(p.n_cells(u) for u in p.units) == 3 * 32491
    # A unit is one chunk: contiguous receivers, every sender, one prompt block.
    for u in p.units:
        assert list(u.layers) == list(range(u.layers[0], u.layers[0] + len(u.layers)))
        assert u.layer_start == u.layers[0] and len(u.grid[0][1]) == 157


def test_patterns_select_receivers_and_senders_by_name_layer_head_and_kind() -> None:
    grid = EdgeGridSpec(senders=("a0.*", "embed"), receivers=("a2.h1.?", "*.k", "logits"))
    p = plan(ModelShape(3, 2, mlp=False), grid)
    assert p.axes.labels("sender") == ["embed", "a0.h0", "a0.h1"]
    assert p.axes.labels("receiver") == [
        "a0.h0.k", "a0.h1.k", "a1.h0.k", "a1.h1.k", "a2.h1.q", "a2.h0.k", "a2.h1.k", "a2.h1.v",
        "logits",
    ]  # fmt: skip
    # A receiver of layer 0 reads only the embedding.
    first = p.units[0]  # its receivers are the first chosen: a0.h0.k on
    assert {s.name for s, r in p.axes.edges_of(first) if r.name == "a0.h0.k"} == {"embed"}


@pytest.mark.parametrize(
    ("grid", "shape", "message"),
    [
        (EdgeGridSpec(receivers=("a3.h0.q",)), ModelShape(2, 4), r"grid.receivers: \['a3.h0.q'\]"),
        (EdgeGridSpec(senders=("a0.h4",)), ModelShape(2, 4), r"heads h0..h3"),
        (EdgeGridSpec(receivers=("m1",)), ModelShape(2, 4, mlp=False), r"attention-only"),
        (EdgeGridSpec(receivers=("a1.g0.k",)), ModelShape(2, 4), r"grid.receivers"),
        (
            EdgeGridSpec(senders=("a1.*",), receivers=("a0.*", "a1.*")),
            ModelShape(2, 4),
            r"grid.senders, grid.receivers: no chosen receiver reads a chosen sender",
        ),
    ],
)
def test_choices_the_model_lacks_are_refused_by_key(grid, shape, message) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(shape, grid)


def test_grouped_query_receivers_are_per_key_value_head() -> None:
    p = plan(ModelShape(1, 4, n_kv_heads=2), EdgeGridSpec(receivers=("*.k",)))
    assert p.axes.labels("receiver") == ["a0.g0.k", "a0.g1.k"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("senders", ["a0.h0.q"], r"grid.senders: \['a0.h0.q'\] name no sender"),
        ("receivers", ["a0.h0"], r"grid.receivers: \['a0.h0'\] name no receiver"),
        ("receivers", [], r"grid.receivers: empty list"),
    ],
)
def test_names_that_cannot_be_nodes_are_refused_before_any_model(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        EdgeGridSpec(**{key: value})
