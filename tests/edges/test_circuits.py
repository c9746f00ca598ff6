"""Circuit sweeps (``grid=circuit``, ``python -m sweep.circuit``) end to end: circuits equal a
hand-written TransformerLens hook reference, the shipped induction model's circuit holds its
known mechanism, the faithfulness curve compares scoring methods, and bad input is one line
that leaves every file as it was."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

import sweep
from sweep.circuit import main as circuit_main
from sweep.edges.graph import GraphShape, Node, edges
from sweep.results.dataset import open_results
from sweep.results.faithfulness import circuit_edges, faithfulness
from tests.edge_reference import edge_forward, position_means, sender_output
from tests.helpers import file_hashes, mixed_rows, native_prompts, worker, write_task
from tests.zygote import python_m

# A chain and a shortcut: embed -> logits alone (size 1); the embedding into a0.h0's value
# (size 2: nothing reads a0.h0's change yet); a0.h0 -> logits (size 3: it reaches the logits).
CHAIN = """# best first
embed -> logits
embed -> a0.h0.v
a0.h0 -> logits
"""


def _value_into_head0(model: Any, tokens: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Layer 0's z when head 0's value input alone reads the residual plus ``delta`` (two
    hooked runs: the new values, then set into head 0 of the base run)."""
    seen: dict[str, torch.Tensor] = {}

    def record(name: str) -> Any:
        def hook(act: torch.Tensor, hook: Any) -> None:
            seen[name] = act.clone()

        return hook

    def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act + delta

    def set_v(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act = act.clone()
        act[:, :, 0] = seen["v"][:, :, 0]
        return act

    v, z = "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", add), (v, record("v"))])
    model.run_with_hooks(tokens, fwd_hooks=[(v, set_v), (z, record("z"))])
    return seen["z"]


def _reference(model: Any, task: Any) -> np.ndarray:
    """[size 1..3, prompt] the logit difference of the CHAIN circuits, written with the
    model's hooks on each unpadded prompt: the corrupted run everywhere, except that the
    logits read the clean embedding (and, at size 3, a0.h0's output when its value input
    alone reads the clean embedding)."""
    out = np.zeros((3, task.n_prompts))
    logits_node, head = Node("logits", 2, "logits"), Node("a0.h0", 0, "head", 0)
    z = "blocks.0.attn.hook_z"
    with torch.no_grad():
        for p in range(task.n_prompts):
            n = int(task.lengths[p])
            clean, corrupted = (t[:, :n] for t in task.rows(np.array([p])))
            _, clean_cache = model.run_with_cache(clean)
            _, corr_cache = model.run_with_cache(corrupted)
            d_embed = clean_cache["blocks.0.hook_resid_pre"] - corr_cache["blocks.0.hook_resid_pre"]
            new_z = _value_into_head0(model, corrupted, d_embed)
            d_head = sender_output(model, corrupted, {z: new_z}, head) - sender_output(
                model, corrupted, corr_cache, head
            )
            answer, wrong = int(task.answer[p]), int(task.wrong[p])
            for k, delta in enumerate((d_embed, d_embed, d_embed + d_head)):
                logits = edge_forward(model, corrupted, delta, logits_node, False)[0]
                out[k, p] = float(logits[answer] - logits[wrong])
    return out


def test_circuits_equal_a_hook_reference(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    edges_file = tmp_path / "chain.txt"
    edges_file.write_text(CHAIN)
    model = native_prompts(task, 2)
    over = [*model, "grid=circuit", f"grid.file={edges_file}", "grid.sizes=[1,2,3]",
            "intervention.direction=noise", "store.prompt_block=2",
            "runner.progress=false"]  # fmt: skip
    ds = open_results(sweep.run([*over, f"store.path={tmp_path / 'c.zarr'}"])).load()
    every = len(edges(GraphShape(2, 4)))  # the whole graph
    assert list(ds["size"].values) == [0, 1, 2, 3, every]
    values = ds["circuit"].sel(metric="logit_diff").values
    np.testing.assert_allclose(values[0], ds["corrupted_baseline"].values[0], atol=1e-4)
    np.testing.assert_allclose(values[-1], ds["clean_baseline"].values[0], atol=1e-4)
    w = worker([*model, "grid.components=[resid_pre]"])
    want = _reference(w.model, w.task)
    np.testing.assert_allclose(values[1:4], want, atol=1e-4)
    # The prompts differ before the last token only, which the logits read: the clean
    # embedding reaches them through a0.h0 alone.
    np.testing.assert_allclose(values[1], values[0], atol=1e-5)
    assert np.abs(values[3] - values[2]).max() > 1e-2
    assert [str(x) for x in ds["circuit_receiver"].values] == ["logits", "a0.h0.v", "logits"]
    assert ds.attrs["circuit"]["method"] == "file"


def _mean_ablated_reference(model: Any, task: Any) -> np.ndarray:
    """[prompt] the logit difference with the embedding, every head's z and every MLP's
    output set to its mean at each position over the prompts that reach it (hooks on
    each unpadded prompt): what the empty circuit under mean ablation must equal."""
    means = position_means(model, task)
    hooks = list(means)
    prompts = [
        task.rows(np.array([p]))[0][:, : int(task.lengths[p])] for p in range(task.n_prompts)
    ]
    with torch.no_grad():
        out = np.zeros(task.n_prompts)
        for p, clean in enumerate(prompts):
            n = clean.shape[1]

            def at_mean(name: str, n: int = n) -> Any:
                def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
                    return means[name][:n][None].expand_as(act).to(act.dtype)

                return hook

            fwd = [(h, at_mean(h)) for h in hooks]
            logits = model.run_with_hooks(clean, fwd_hooks=fwd)[0, -1]
            out[p] = float(logits[int(task.answer[p])] - logits[int(task.wrong[p])])
    return out


def test_empty_mean_ablated_circuit_is_every_output_at_its_mean(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    edges_file = tmp_path / "chain.txt"
    edges_file.write_text(CHAIN)
    model = native_prompts(task, 2)
    path = sweep.run([*model, "grid=circuit", f"grid.file={edges_file}", "grid.sizes=[3]",
                      "intervention=mean", "runner.progress=false",
                      f"store.path={tmp_path / 'm.zarr'}"])  # fmt: skip
    ds = open_results(path).load()
    values = ds["circuit"].sel(metric="logit_diff").values
    w = worker([*model, "grid.components=[resid_pre]"])
    want = _mean_ablated_reference(w.model, w.task)
    np.testing.assert_allclose(values[0], want, atol=1e-4)
    np.testing.assert_allclose(values[-1], ds["clean_baseline"].values[0], atol=1e-4)
    assert np.abs(want - ds["clean_baseline"].values[0]).max() > 1e-2


def _cli(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return python_m([module, *args], tmp_path)


def test_induction_circuit_holds_its_mechanism(induction: dict[str, Path]) -> None:
    ds = open_results(induction["exact_circuit"]).load()
    assert list(ds["size"].values) == [0, 10, 20, 30, 81]
    top10 = circuit_edges(ds, 10)
    pairs = set(zip(top10["sender"], top10["receiver"], strict=True))
    assert ("a0.h3", "a1.h1.k") in pairs  # previous-token head -> induction head's key
    assert ("embed", "a0.h3.v") in pairs  # the previous token, into that head's value
    f = faithfulness(ds)
    assert float(f.sel(size=0)) == 0 and abs(float(f.sel(size=81)) - 1) < 1e-6
    # Computed: the top 10 edges carry most of it, the top 20 at least 0.8 (this model
    # spreads induction over three layer-1 heads: 0.8 takes 14 edges even when chosen greedily).
    assert float(f.sel(size=10)) > 0.5
    assert float(f.sel(size=20)) >= 0.8
    values = ds["circuit"].sel(metric="logit_diff")
    np.testing.assert_allclose(values.sel(size=0), ds["corrupted_baseline"][0], atol=1e-4)
    np.testing.assert_allclose(values.sel(size=81), ds["clean_baseline"][0], atol=1e-4)


def test_faithfulness_curves_one_line_per_method(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    import sweep.figures as sf

    stores = [str(induction[f"{m}_circuit"]) for m in ("exact", "eap", "eapig")]
    fig = sf.faithfulness(stores)
    assert [t.name for t in fig.data] == [
        f"{m} of patch noise; ablated: patch noise" for m in ("exact", "EAP", "EAP-IG (5 steps)")
    ]
    for trace, store in zip(fig.data, stores, strict=True):
        f = faithfulness(open_results(store))
        assert list(trace.x) == [10, 20, 30, 81]  # the empty circuit: 0 by definition
        np.testing.assert_allclose(trace.y, f.values[1:], atol=1e-3)
    # A log axis labels its ticks at the stored sizes, in full (not 2 and 3 for 20 and 30).
    assert list(fig.layout.xaxis.ticktext) == ["10", "20", "30", "81"]
    assert "edges outside carry the corrupted run's sender output" in fig.layout.title.text
    out = tmp_path / "curves"
    done = _cli(tmp_path, "sweep.plot", *stores, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "faithfulness.png").stat().st_size > 10_000
    page = (out / "index.html").read_text()
    assert "EAP-IG (5 steps)" in page and "faithfulness" in page
    assert "IoU" in page and "CPR" in page  # each store's curve scores, overlaps with the first
    if (out / "circuit_graph.svg").exists():  # with Graphviz's dot
        svg = (out / "circuit_graph.svg").read_text()
        assert "a0.h3" in svg and "a1.h1" in svg


def test_same_command_resumes(induction: dict[str, Path], tmp_path: Path) -> None:
    store = induction["exact"]
    args = [str(store), "--sizes", "10,20,30", "store.plots=false", "runner.progress=false"]
    before = file_hashes(Path(str(induction["exact_circuit"])))
    done = _cli(tmp_path, "sweep.circuit", *args)
    assert done.returncode == 0, done.stderr
    assert "units: 0 computed this run, 5 in the sweep" in done.stdout
    assert "    10 edges: faithfulness" in done.stdout
    status = _cli(tmp_path, "sweep.status", str(induction["exact_circuit"]), "--verify")
    assert "circuit: 5 of 5 units done" in status.stdout
    assert "circuits x prompts: 80 of 80 done" in status.stdout
    assert f"grid.scores: {store}" in status.stdout
    assert "verify: every done unit's chunk reads back" in status.stdout
    after = file_hashes(Path(str(induction["exact_circuit"])))
    assert {k: v for k, v in after.items() if "_patchsweep" not in k} == {
        k: v for k, v in before.items() if "_patchsweep" not in k
    }


BAD = [
    (["--sizes", "10,500"], "grid.sizes: [500] larger than the 81 edges"),
    (["--sizes", "0,10"], "grid.sizes: [0, 10] holds 0"),
    (["intervention.direction=denoise"], "intervention=patch intervention.direction=denoise"),
    (["--file", "{unknown}"], "grid.file: a5.h0 -> logits is not an edge of this model's graph"),
    (["--file", "{malformed}"], "line 2: 'a0.h1 to logits' is not an edge"),
    (["grid.rank_metric=prob"], "grid.rank_metric: metric 'prob' is not in this store"),
    (["model.name=gpt2"], "grid.scores: "),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_and_touches_nothing(
    induction: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "unknown.txt").write_text("a0.h3 -> a1.h1.k\na5.h0 -> logits\n")
    (tmp_path / "malformed.txt").write_text("a0.h3 -> a1.h1.k\na0.h1 to logits\n")
    args = [a.format(unknown=tmp_path / "unknown.txt", malformed=tmp_path / "malformed.txt")
            for a in args]  # fmt: skip
    root = induction["exact"].parent
    before = file_hashes(root)
    out = tmp_path / "new.circuit.zarr"
    done = _cli(tmp_path, "sweep.circuit", str(induction["exact"]), *args, f"store.path={out}")
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert file_hashes(root) == before and not out.exists()


def test_scores_that_cannot_rank_are_refused(induction: dict[str, Path], tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.zarr"
    sweep.run(["store.plots=false", "runner.progress=false", f"store.path={nodes}"])
    unfinished = tmp_path / "unfinished.zarr"  # as a killed sweep leaves it: a unit not done
    shutil.copytree(induction["exact"], unfinished)
    zarr.open_group(str(unfinished), path="_patchsweep", mode="r+")["done"][0] = 0
    cases = {
        str(nodes): "grid.scores: " + f"{nodes} is a store of cells",
        str(tmp_path / "none.zarr"): "no such store",
        str(unfinished): f"grid.scores: {unfinished} is not finished (3 of 4 units done)",
    }
    for store, message in cases.items():
        done = _cli(tmp_path, "sweep.circuit", store, "runner.progress=false")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nodes.circuit.zarr").exists()
    assert not (tmp_path / "unfinished.circuit.zarr").exists()


def test_circuits_on_ray_equal_in_process(ray_session, induction: dict[str, Path]) -> None:
    """The command's own overrides take the runner: its units stream through Ray's
    workers (two, each with every ablated output cached) into values equal to in-process."""
    root = induction["exact"].parent
    circuit_main([str(induction["exact"]), "--sizes", "10,20,30", "runner=ray",
                  f"runner.address={ray_session}", "runner.num_workers=2", "store.plots=false",
                  "runner.progress=false", f"store.path={root / 'ray.circuit.zarr'}"])  # fmt: skip
    a, b = (open_results(p).load() for p in (induction["exact_circuit"], root / "ray.circuit.zarr"))
    np.testing.assert_allclose(a["circuit"].values, b["circuit"].values, atol=1e-6)
    assert b.attrs["circuit"] == a.attrs["circuit"]


def test_faithfulness_reads_only_what_is_computed(
    induction: dict[str, Path], tmp_path: Path
) -> None:
    """A size computed for some prompts is over those (and says how many); one computed
    for none is "not computed yet"; a full model no different from the empty circuit
    leaves faithfulness undefined, never infinite."""
    from sweep.results.faithfulness import circuit_lines, faithful_size

    store = tmp_path / "partial.zarr"
    shutil.copytree(induction["exact_circuit"], store)
    arr = zarr.open_group(str(store), mode="r+")["circuit"]
    v = np.asarray(arr[:])  # [metric, size, prompt]; sizes 0, 10, 20, 30, 81
    arr[0, 1, 8:] = np.nan
    arr[0, 3, :] = np.nan
    ds = open_results(store).load()
    f = faithfulness(ds)
    e, full = v[0, 0], v[0, 4]
    want = (v[0, 1, :8] - e[:8]).mean() / (full[:8] - e[:8]).mean()
    assert abs(float(f.sel(size=10)) - want) < 1e-5 and f.attrs["n"][1] == 8
    assert np.isnan(float(f.sel(size=30)))
    lines = "\n".join(circuit_lines(ds))
    assert "30 edges: not computed yet" in lines and "8 of 16 prompts" in lines
    arr[0, 4, :] = v[0, 0]  # the full model's values = the empty circuit's
    ds = open_results(store).load()
    assert np.isnan(faithfulness(ds).values).all() and faithful_size(ds) is None
    assert "faithfulness is undefined" in "\n".join(circuit_lines(ds))


def test_held_out_prompts_and_nested_keys(induction: dict[str, Path], tmp_path: Path) -> None:
    """task.* measures a circuit on other prompts; a nested model key given on the command
    line wins over the store's, whose other keys stay."""
    done = _cli(tmp_path, "sweep.circuit", str(induction["exact"]), "--sizes", "10",
                "task.seed=1", "task.n_prompts=8", "store.plots=false", "runner.progress=false",
                f"store.path={tmp_path / 'held.zarr'}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    held = open_results(tmp_path / "held.zarr")
    assert held.sizes["prompt"] == 8 and "8 prompts" in done.stdout
    nodes = tmp_path / "native.zarr"
    sweep.run(["model=native", "model.native.n_layers=2", "model.native.d_mlp=128",
               "+model.native.d_vocab=800", "store.plots=false", "runner.progress=false",
               f"store.path={nodes}"])  # fmt: skip
    chain = tmp_path / "chain.txt"
    chain.write_text(CHAIN)
    done = _cli(tmp_path, "sweep.circuit", str(nodes), "--file", str(chain),
                "model.native.n_layers=3", "store.plots=false",
                "runner.progress=false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    ds = open_results(tmp_path / "native.circuit-file.zarr")
    assert ds.attrs["graph"]["n_layers"] == 3
    assert "d_mlp: 128" in ds.attrs["config"] and "n_layers: 3" in ds.attrs["config"]
    assert "d_vocab: 800" in ds.attrs["config"]  # a key the store's config added with +


@pytest.mark.parametrize("path", [r"a\b.zarr", "it's.zarr", "dir\\", "s3://b/x.zarr", "a b/x"])
def test_paths_reach_hydra_as_they_are(path: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sweep.circuit_config import quoted

    assert OverridesParser.create().parse_override(f"k={quoted(path)}").value() == path
