"""Circuits that read right: the ablation fits the scores (or says it does not), circuits
are connected (dangling edges left out and counted), signed rankings, thresholds and
fractions pick sizes, a store grows by the sizes asked later, the curve's CPR and CMD,
overlaps and exports agree with hand computations, a small full-minus-empty gap warns, and
the edge store's and the circuit's pictures say the same."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import sweep
from sweep.circuit import main as circuit_main
from sweep.edges.graph import GraphShape, edges
from sweep.edges.ranking import MIB_FRACTIONS, connected, receiver_nodes
from sweep.results import analysis
from sweep.results.dataset import open_results
from sweep.results.faithfulness import (
    circuit_edges,
    circuit_lines,
    curve_scores,
    faithfulness,
    gap_warning,
    overlap,
)
from tests.helpers import file_hashes
from tests.zygote import python_m

QUIET = ["store.plots=false", "runner.progress=false"]


def _cli(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return python_m([module, *args], cwd)


def _on_a_path(circuit: list[tuple[str, str]], shape: GraphShape) -> np.ndarray:
    """By search, not by pruning: an edge lies on a path from embed to the logits."""
    follows: dict[str, set[str]] = {}
    for s, r in circuit:
        follows.setdefault(s, set()).update(receiver_nodes(r, shape))

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for n in follows.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    fed = reach("embed")
    return np.array([s in fed and any("logits" in reach(n) for n in receiver_nodes(r, shape))
                     for s, r in circuit])  # fmt: skip


@pytest.mark.parametrize(
    "shape", [GraphShape(2, 4), GraphShape(3, 4, 2), GraphShape(3, 2, mlp=False),
              GraphShape(2, 4, parallel=True)]
)  # fmt: skip
def test_connected_edges_are_those_on_a_path(shape: GraphShape) -> None:
    every = [(s.name, r.name) for s, r in edges(shape)]
    rng = random.Random(0)
    for _ in range(200):
        circuit = rng.sample(every, rng.randint(0, min(40, len(every))))
        np.testing.assert_array_equal(connected(circuit, shape), _on_a_path(circuit, shape))


def test_the_circuit_ablates_as_its_scores_were_made(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    """Mean-ablation scores (exact or EAP) give mean-ablation circuits by default, with no
    note; another ablation is said in one line, in the command's output and the report;
    denoising scores are said too."""
    for name in ("mean", "eap_mean"):
        store = tmp_path / f"{name}.zarr"
        shutil.copytree(induction[name], store)
        done = _cli(tmp_path, "sweep.circuit", str(store), "--sizes", "10", *QUIET)
        assert done.returncode == 0 and "note" not in done.stderr, done.stderr
        ds = open_results(tmp_path / f"{name}.circuit-mean.zarr")
        assert ds.attrs["intervention"] == "mean" and ds.attrs["circuit"]["scored"] == "mean"
        assert "carrying mean ablation" in done.stdout and "note:" not in done.stdout
    done = _cli(tmp_path, "sweep.circuit", str(tmp_path / "mean.zarr"), "--ablation", "patch",
                "--sizes", "10", *QUIET)  # fmt: skip
    notes = [x for x in done.stderr.splitlines() if x.startswith("patchsweep: note:")]
    assert done.returncode == 0 and len(notes) == 1, done.stderr
    assert "scores edges by mean, but this circuit ablates by patch" in notes[0]
    assert "note: the ranking's scores are of mean, the circuit ablates by patch noise" in (
        done.stdout
    )
    denoise = tmp_path / "denoise.zarr"
    sweep.run(["grid=edges", "intervention=eap", *QUIET, f"store.path={denoise}"])
    done = _cli(tmp_path, "sweep.circuit", str(denoise), "--sizes", "10", *QUIET)
    assert done.returncode == 0 and "scores edges by denoising" in done.stderr
    assert "rank by noising scores to match" in done.stdout
    import sweep.figures as sf

    fig = sf.faithfulness([induction["exact_circuit"], tmp_path / "mean.circuit-mean.zarr"])
    assert [t.name for t in fig.data] == ["exact of patch noise; ablated: patch noise",
                                          "exact of mean; ablated: mean"]  # fmt: skip
    title = fig.layout.title.text.replace("<br>", " ")
    assert "each line's ablation in its legend" in title
    assert "Note: the lines' empty / full means differ" in title


def test_python_m_sweep_grid_circuit_is_the_circuit_command(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    """``python -m sweep grid=circuit grid.scores=STORE`` takes the store's model, task and
    ablation (noising by default) and gives the circuit command's values."""
    out = tmp_path / "direct.zarr"
    done = _cli(tmp_path, "sweep", "grid=circuit", f"grid.scores={induction['exact']}",
                "grid.sizes=[10,20,30]", *QUIET, f"store.path={out}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    a, b = (open_results(p).load() for p in (out, induction["exact_circuit"]))
    np.testing.assert_allclose(a["circuit"].values, b["circuit"].values, atol=1e-6)


def test_pruned_circuits_hold_only_connected_edges(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    """EAP's top 10 holds 3 edges on no path from embed to the logits: the circuit of 10
    leaves them out (counted per size), and a circuit of exactly its kept edges, given as
    a file and not pruned, has the same values (under mean ablation too, where a dangling
    edge's sender does change what it sends)."""
    ds = open_results(induction["eap_circuit"]).load()
    shape = GraphShape(**ds.attrs["graph"])
    ranking = list(zip(ds["circuit_sender"].values, ds["circuit_receiver"].values, strict=True))
    for k, size in enumerate(ds["size"].values[1:-1], 1):
        on_path = _on_a_path(ranking[:size], shape)
        assert ds["size_edges"].values[k] == on_path.sum()
        assert ds["size_dangling"].values[k] == size - on_path.sum()
        table = circuit_edges(ds, int(size))
        assert list(table["rank"]) == list(np.flatnonzero(on_path))
    assert ds["size_dangling"].sel(size=10) == 3
    kept = circuit_edges(ds, 10)
    edge_file = tmp_path / "kept.txt"
    pairs = zip(kept["sender"], kept["receiver"], strict=True)
    edge_file.write_text("".join(f"{a} -> {b}\n" for a, b in pairs))
    for ablation, pruned_store in (("patch", induction["eap_circuit"]), ("mean", None)):
        if pruned_store is None:
            pruned_store = tmp_path / "pruned.zarr"
            circuit_main([str(induction["eap"]), "--sizes", "10", "--ablation", ablation,
                          *QUIET, f"store.path={pruned_store}"])  # fmt: skip
        as_file = tmp_path / f"file-{ablation}.zarr"
        circuit_main([str(induction["eap"]), "--file", str(edge_file), "--no-prune",
                      "--ablation", ablation, "--sizes", "1", *QUIET,
                      f"store.path={as_file}"])  # fmt: skip
        a = open_results(pruned_store)["circuit"].sel(size=10).values
        b = open_results(as_file)["circuit"].sel(size=len(kept)).values
        np.testing.assert_allclose(a, b, atol=1e-5)
    unpruned = tmp_path / "unpruned.zarr"
    circuit_main([str(induction["eap"]), "--sizes", "10", "--no-prune", "--ablation", "mean",
                  *QUIET, f"store.path={unpruned}"])  # fmt: skip
    u = open_results(unpruned)
    assert u["size_edges"].sel(size=10) == 10 and u["size_dangling"].sel(size=10) == 3
    assert "3 of them on no path from embed to the logits (kept: --no-prune)" in "\n".join(
        circuit_lines(u)
    )


def test_signed_ranking_thresholds_and_fractions(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    """--signed ranks by the scaled score (edges against the behaviour last); a threshold
    picks the edges whose score reaches it; fractions are of the graph's edges; mib is
    MIB's list."""
    out = tmp_path / "signed.zarr"
    circuit_main([str(induction["exact"]), "--signed", "--threshold", "0.5,0.2", "--sizes",
                  "0.1,0.5", *QUIET, f"store.path={out}"])  # fmt: skip
    ds = open_results(out).load()
    scaled = ds["circuit_scaled"].values
    assert (np.diff(scaled) <= 0).all() and scaled[-1] < 0 < scaled[0]
    effect = ds["circuit_score"].values
    toward = effect * np.sign((effect * scaled).sum())  # each score signed toward the behaviour
    picked = {float(t): int(s) for s, t in zip(ds["size"].values, ds["size_threshold"].values,
                                                strict=True) if np.isfinite(t)}  # fmt: skip
    assert picked == {0.5: int((toward >= 0.5).sum()), 0.2: int((toward >= 0.2).sum())}
    assert {8, 40} <= set(ds["size"].values.tolist())  # int(0.1 * 81), int(0.5 * 81)
    assert "(signed score >= 0.5)" in "\n".join(circuit_lines(ds))
    exact = open_results(induction["exact"]).load()
    table = analysis.top_edges(exact, 81, min_prompts=1)
    assert list(ds["circuit_score"].values) == pytest.approx(
        list(table.sort_values("scaled", ascending=False, kind="stable")["effect"])
    )
    from sweep.circuit import sizes_arg

    assert sizes_arg("mib") == ",".join(f"{f:g}" for f in MIB_FRACTIONS[:-1])
    mib = tmp_path / "mib.zarr"
    circuit_main([str(induction["exact"]), "--sizes", "mib", *QUIET, f"store.path={mib}"])
    want = sorted({0, *(max(1, int(f * 81)) for f in MIB_FRACTIONS)})  # 1.0: the whole graph
    assert list(open_results(mib)["size"].values) == want


def test_a_file_circuit_is_measured_whole_and_says_why_it_is_empty(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    edge_file = tmp_path / "three.txt"
    edge_file.write_text("a0.h3 -> a1.h1.k\nembed -> a0.h3.v\na1.h1 -> logits\n")
    out = tmp_path / "three.zarr"
    circuit_main([str(induction["exact"]), "--file", str(edge_file), *QUIET,
                  f"store.path={out}"])  # fmt: skip
    ds = open_results(out)
    assert list(ds["size"].values) == [0, 1, 3, 81]
    lines = "\n".join(circuit_lines(ds))
    assert "the edges of " in lines and "by file scores" not in lines
    assert "1 edges: faithfulness +0.000" in lines
    assert "none of its 1 edges lies on a path from embed to the logits" in lines
    assert float(faithfulness(ds).sel(size=3)) > 0.1  # the chain reaches the logits


def test_sizes_asked_later_add_to_the_store(induction: dict[str, Path], tmp_path: Path) -> None:
    """The same store, more sizes: only the new ones are computed, the chunks already
    there stay as they were, and the new values equal a fresh store's."""
    store = tmp_path / "grow.zarr"
    shutil.copytree(induction["exact_circuit"], store)
    before = {k: v for k, v in file_hashes(store).items() if "/circuit/c/" in k}
    done = _cli(tmp_path, "sweep.circuit", str(induction["exact"]), "--sizes", "5,10", *QUIET,
                f"store.path={store}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "units: 1 computed this run, 6 in the sweep" in done.stdout
    after = file_hashes(store)
    assert {k: after[k] for k in before} == before
    ds = open_results(store).load()
    assert list(ds["size"].values) == [0, 5, 10, 20, 30, 81]
    fresh = tmp_path / "fresh.zarr"
    circuit_main([str(induction["exact"]), "--sizes", "5", *QUIET, f"store.path={fresh}"])
    want = open_results(fresh)["circuit"].sel(size=5).values
    np.testing.assert_allclose(ds["circuit"].sel(size=5).values, want, atol=1e-6)
    status = _cli(tmp_path, "sweep.status", str(store), "--verify")
    assert "circuit: 6 of 6 units done" in status.stdout, status.stdout
    # A threshold's size, then another size: the threshold's label stays.
    circuit_main([str(induction["exact"]), "--threshold", "0.5", *QUIET, f"store.path={store}"])
    circuit_main([str(induction["exact"]), "--sizes", "7", *QUIET, f"store.path={store}"])
    labels = open_results(store)["size_threshold"]
    assert int(np.isfinite(labels.values).sum()) == 1 and float(labels.max()) == 0.5
    again = _cli(tmp_path, "sweep.circuit", str(induction["exact"]), "--sizes", "5", *QUIET,
                 f"store.path={store}")  # fmt: skip
    assert "units: 0 computed this run" in again.stdout


def test_curve_scores_overlap_and_exports(induction: dict[str, Path], tmp_path: Path) -> None:
    """CPR and CMD equal trapezoids of the stored faithfulness over the sizes as fractions
    of the graph, stored in attrs by the sweep, with intervals around them; IoU equals the
    edge sets' by hand; the JSON export is EAP-IG's graph, and the edge file reads back
    as the same circuit."""
    ds = open_results(induction["exact_circuit"]).load()
    f = faithfulness(ds)
    x = f["size"].values[1:] / 81
    y = f.values[1:]
    scores = curve_scores(ds)
    assert scores is not None and scores.n == 16
    assert scores.cpr == pytest.approx(np.trapezoid(y, x), abs=1e-6)
    assert scores.cmd == pytest.approx(np.trapezoid(np.abs(1 - y), x), abs=1e-6)
    assert scores.cpr_ci[0] < scores.cpr < scores.cpr_ci[1]
    assert scores.cmd_ci[0] < scores.cmd < scores.cmd_ci[1]
    assert ds.attrs["curve_scores"]["logit_diff"]["cpr"] == pytest.approx(scores.cpr)
    eap = open_results(induction["eap_circuit"]).load()
    table = overlap(ds, eap)
    for row in table.itertuples():
        a, b = (set(zip(t["sender"], t["receiver"], strict=True))
                for t in (circuit_edges(ds, row.size), circuit_edges(eap, row.size)))  # fmt: skip
        assert row.iou == pytest.approx(len(a & b) / len(a | b))
    assert list(table["size"]) == [10, 20, 30] and (overlap(ds, ds)["iou"] == 1).all()
    out = tmp_path / "c.json"
    done = _cli(tmp_path, "sweep.circuit", str(induction["exact_circuit"]), "--export",
                str(out), "--size", "20")  # fmt: skip
    assert done.returncode == 0, done.stderr
    graph = json.loads(out.read_text())
    cfg = {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 64}
    assert graph["cfg"] == cfg  # what EAP-IG's Graph.from_json reads
    assert len(graph["edges"]) == 81 and all("score" in e for e in graph["edges"].values())
    kept = circuit_edges(ds, 20)
    assert sum(e["in_graph"] for e in graph["edges"].values()) == len(kept)
    assert graph["edges"]["a0.h3->a1.h1<k>"]["in_graph"] and graph["nodes"]["input"]["in_graph"]
    at = list(zip(ds["circuit_sender"].values, ds["circuit_receiver"].values, strict=True))
    score = float(ds["circuit_score"][at.index(("embed", "a0.h3.v"))])
    assert graph["edges"]["input->a0.h3<v>"]["score"] == pytest.approx(score)
    again = _cli(tmp_path, "sweep.circuit", str(induction["exact_circuit"]), "--export",
                 str(out), "--size", "10")  # fmt: skip
    assert again.returncode == 2 and f"--export: {out} exists" in again.stderr
    assert json.loads(out.read_text()) == graph  # the file is as it was
    text = tmp_path / "c.txt"
    circuit_main([str(induction["exact_circuit"]), "--export", str(text), "--size", "20"])
    back = tmp_path / "back.zarr"
    circuit_main([str(induction["exact"]), "--file", str(text), "--sizes", "1", *QUIET,
                  f"store.path={back}"])  # fmt: skip
    np.testing.assert_allclose(open_results(back)["circuit"].sel(size=len(kept)).values,
                               ds["circuit"].sel(size=20).values, atol=1e-5)  # fmt: skip


def test_a_small_gap_between_full_and_empty_warns(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    """Full and empty circuits whose means nearly agree while each prompt's differ by 1.5:
    faithfulness reads far outside 0..1, and the report says why."""
    store = tmp_path / "gap.zarr"
    shutil.copytree(induction["exact_circuit"], store)
    arr = zarr.open_group(str(store), mode="r+")["circuit"]
    v = np.asarray(arr[:])  # [metric, size, prompt]; sizes 0, 10, 20, 30, 81
    signs = np.where(np.arange(v.shape[2]) % 2 == 0, 1.0, -1.0)
    signs[0] = 1.2  # the mean gap: 0.2 * 1.5 / 16, against 1.5 per prompt
    v[0, 4] = v[0, 0] + 1.5 * signs
    v[0, 1] = v[0, 0] + 1.0  # a size that moves the metric by 1: faithfulness ~ +53
    arr[:] = v
    ds = open_results(store).load()
    assert abs(float(faithfulness(ds).sel(size=10))) > 10
    warning = gap_warning(ds)
    assert "on logit_diff on average over 16 prompts" in warning
    assert "while each prompt's own two differ by 1.52 on average" in warning
    assert "far outside 0..1" in "\n".join(circuit_lines(ds))
    assert gap_warning(open_results(induction["exact_circuit"])) == ""


def test_the_two_pictures_say_the_same(induction: dict[str, Path]) -> None:
    """The edge store's graph and its circuit's graph draw the circuit's edges with the
    same label (input and fraction destroyed) and colour."""
    from sweep.results.edge_graph import circuit_graph, edge_graph

    pattern = re.compile(r'(\S+) -> (\S+) \[label="([^"]+)" color="(#\w+)"')
    top = set(pattern.findall(edge_graph(open_results(induction["exact"]).load(), 20).source))
    ds = open_results(induction["exact_circuit"]).load()
    drawn = set(pattern.findall(circuit_graph(ds, 20, "t").source))
    assert drawn and drawn <= top  # the circuit of 20: the top 20 less dangling ones
    assert ('"a0.h3"', '"a1.h1"', "k +0.25", "#2166ac") in drawn


def test_a_notebook_reaches_what_the_readme_shows(induction: dict[str, Path]) -> None:
    """``import sweep`` alone reaches ``sweep.analysis``; an edge store's top cells and a
    circuit store's heatmap say what reads them instead; faithfulness is computed."""
    done = subprocess.run([sys.executable, "-c", "import sweep; print(sweep.analysis."
                           "top_edges.__name__, sweep.analysis.faithfulness.__name__)"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.stdout.split() == ["top_edges", "faithfulness"], done.stderr
    edges_ds = open_results(induction["exact"])
    with pytest.raises(ValueError, match="this store holds edges, not cells: use top_edges"):
        edges_ds.patchsweep.top_cells()
    assert len(edges_ds.patchsweep.top_edges(3)) == 3
    ds = open_results(induction["exact_circuit"])
    with pytest.raises(ValueError, match="a circuit store is drawn as a faithfulness curve"):
        ds.patchsweep.heatmap("circuit")
    with pytest.raises(ValueError, match="this store holds circuits, not cells"):
        analysis.top_cells(ds)
    f = ds.patchsweep.faithfulness()
    assert isinstance(f.data, np.ndarray) and f.sel(size=81) == pytest.approx(1.0)
