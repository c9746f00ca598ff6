"""The graph: senders, receivers and which edges exist, by the model's shape."""

from __future__ import annotations

from sweep.edges.graph import GraphShape, Node, connects, edges, receivers, senders


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


def test_gpt2_small_has_the_edges_circuit_discovery_counts() -> None:
    shape = GraphShape(12, 12)
    assert len(senders(shape)) == 1 + 12 * 13 and len(receivers(shape)) == 12 * 37 + 1
    assert len(edges(shape)) == 32491  # auto-circuit's count for GPT-2-small


def test_names_and_block_order() -> None:
    shape = GraphShape(2, 2)
    assert names(senders(shape)) == ["embed", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1"]
    assert names(receivers(shape))[:7] == [
        "a0.h0.q", "a0.h1.q", "a0.h0.k", "a0.h1.k", "a0.h0.v", "a0.h1.v", "m0",
    ]  # fmt: skip
    assert names(receivers(shape))[-1] == "logits"
    into_m0 = [s.name for s, r in edges(shape) if r.name == "m0"]
    assert into_m0 == ["embed", "a0.h0", "a0.h1"]  # its own layer's heads, not itself
    into_a1 = {s.name for s, r in edges(shape) if r.name == "a1.h0.k"}
    assert into_a1 == {"embed", "a0.h0", "a0.h1", "m0"}
    assert {s.name for s, r in edges(shape) if r.name == "logits"} == set(names(senders(shape)))


def test_attention_only_parallel_and_grouped_query_models() -> None:
    attn_only = GraphShape(2, 2, mlp=False)
    assert "m0" not in names(senders(attn_only)) + names(receivers(attn_only))
    parallel = GraphShape(2, 2, parallel=True)
    head, mlp = Node("a0.h1", 0, "head", 1), Node("m0", 0, "mlp")
    assert not connects(head, mlp, parallel) and connects(head, mlp, GraphShape(2, 2))
    assert {s.name for s, r in edges(parallel) if r.name == "m0"} == {"embed"}
    grouped = GraphShape(1, 4, n_kv_heads=2)
    assert names(receivers(grouped)) == [
        "a0.h0.q", "a0.h1.q", "a0.h2.q", "a0.h3.q",
        "a0.g0.k", "a0.g1.k", "a0.g0.v", "a0.g1.v", "m0", "logits",
    ]  # fmt: skip


def test_no_edge_runs_backwards() -> None:
    shape = GraphShape(3, 2)
    for s, r in edges(shape):
        assert r.layer > s.layer or (r.layer == s.layer and r.kind == "mlp" and s.kind == "head")
