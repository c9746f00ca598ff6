"""An edge store's pictures: the receiver x sender heatmap and the top edges drawn by
Graphviz (SVG in the page, PNG beside it), on the shipped induction model's edges."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import needs_chromium, page_state

import sweep
from sweep.analysis import scaled, top_edges
from sweep.results.edge_graph import edge_graph, split
from sweep.results.plot import heatmap, render

HAS_DOT = shutil.which("dot") is not None


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edges") / "e.zarr"
    return Path(sweep.run(["grid=edges", "runner.progress=false", f"store.path={path}"]))


def test_names_split_into_drawn_nodes_and_their_inputs() -> None:
    assert split("a5.h1.k") == ("a5.h1", "k")
    assert split("a5.g0.v") == ("a5.g0", "v")
    assert [split(n) for n in ("embed", "m3", "logits", "a2.h7")] == [
        ("embed", ""), ("m3", ""), ("logits", ""), ("a2.h7", ""),
    ]  # fmt: skip


def test_heatmap_is_receivers_by_senders_on_the_scale(edge_store: Path) -> None:
    ds = sweep.open_results(edge_store).load()
    h = heatmap(ds, "edges", "logit_diff")
    assert h.row_labels == [str(r) for r in ds["receiver"].values]
    assert h.col_labels == [str(s) for s in ds["sender"].values]
    want = scaled(ds, "edges", metric="logit_diff").transpose("receiver", "sender").values
    np.testing.assert_allclose(h.values, want, equal_nan=True)
    assert np.isnan(h.values[h.row_labels.index("a0.h0.q"), h.col_labels.index("a0.h1")])


def test_the_graph_draws_the_top_edges_with_their_sign_and_input(edge_store: Path) -> None:
    ds = sweep.open_results(edge_store).load()
    top = top_edges(ds, 12)
    g = edge_graph(ds, k=12)
    drawn = re.findall(r'\t"?([\w.]+)"? -> "?([\w.]+)"? \[(.*)\]', g.source)
    assert len(drawn) == 12
    for (sender, receiver, attrs), (_, row) in zip(drawn, top.iterrows(), strict=True):
        node, kind = split(str(row["receiver"]))
        assert (sender, receiver) == (str(row["sender"]), node)
        assert f'label="{kind} {row["scaled"]:+.2f}"'.replace('" ', '"') in attrs
        assert ("#2166ac" if row["scaled"] >= 0 else "#b2182b") in attrs
    # The induction circuit: the previous-token head's output into a layer-1 head's key.
    assert any(s == "a0.h3" and r.startswith("a1.") and 'label="k ' in a for s, r, a in drawn)
    ranks = re.findall(r"rank=same\n((?:\t\t.*\n)+)", g.source)
    order = [[x.strip().strip('"') for x in block.splitlines()] for block in ranks]
    assert order[0] == ["embed"] and order[-1] == ["logits"]  # bottom to top, block order


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed (make graphviz)")
def test_render_writes_the_graph_as_svg_in_the_page_and_a_png(
    edge_store: Path, tmp_path: Path
) -> None:
    out = render(edge_store, tmp_path / "plots")
    png = (out / "edges_graph.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert (out / "edges.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert '<div id="edge-graph"><svg' in page
    svg = (out / "edges_graph.svg").read_text()
    assert "<title>a0.h3&#45;&gt;a1.h" in svg  # Graphviz laid out the circuit's edge


@needs_chromium
def test_the_edge_page_draws_the_edge_map_and_its_prompts(edge_store: Path, tmp_path) -> None:
    out = render(edge_store, tmp_path / "plots")
    ds = sweep.open_results(edge_store).load()
    state, log = page_state((out / "index.html").as_uri() + "#view=p1", tmp_path / "profile")
    assert state["rendered"] == 1 and state["requests"] == [], log[-2000:]
    want = heatmap(ds, "edges", "logit_diff", prompt=1).values[0]
    got = np.array([np.nan if v is None else v for v in state["first-rows"][0]], dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    assert state["titles"][0].endswith("<sup>prompt 1</sup>")


def test_without_dot_the_page_says_how_to_get_it(
    edge_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no dot on it
    out = render(edge_store, tmp_path / "plots")
    assert "dot program is not installed" in (out / "index.html").read_text()
    assert not (out / "edges_graph.png").exists() and (out / "edges.png").exists()
