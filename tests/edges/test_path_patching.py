"""Path patching (``grid=paths``) against a hand-written two-pass hook reference
(``tests/edge_reference.py``), per prompt, on a native model, a GPT-2 checkpoint, and
Llama (grouped-query) and GPT-NeoX (parallel blocks) checkpoints; and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep.analysis import scaled, top_cells
from sweep.edges.graph import GraphShape, receivers
from sweep.errors import ConfigError
from tests.edge_reference import path_logit_diffs
from tests.helpers import mixed_rows, native_prompts, worker, write_task

CASES = [
    # (model, receivers, direction)
    ("native", "[a2.*.q,a2.h1.v]", "denoise"),
    ("native", "[logits]", "noise"),
    ("gpt2", "[a1.*.k]", "noise"),
    ("llama", "[a1.*.q,a1.g1.k]", "denoise"),
    ("neox", "[a1.h0.v,logits]", None),  # mixed: refused
    ("neox", "[a1.*.k]", "denoise"),
]


def model_overrides(which: str, task: Path, gpt2_dir: Path, family_dir) -> list[str]:
    if which == "native":
        return native_prompts(task, 3)
    path = gpt2_dir if which == "gpt2" else family_dir(which)
    return ["model=hf", f"model.name={path}", "task=prompts", f"task.path={task}"]


@pytest.mark.parametrize(("which", "into", "direction"), CASES)
def test_paths_equal_the_two_pass_hook_reference(
    tmp_path: Path, gpt2_dir: Path, family_dir, which: str, into: str, direction: str | None
) -> None:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    over = model_overrides(which, task, gpt2_dir, family_dir)
    run = [*over, "grid=paths", f"grid.receivers={into}", "store.chunk_kb=1",
           "store.prompt_block=2", "runner.memory_mb=4", "runner.progress=false",
           f"store.path={tmp_path / 'p.zarr'}"]  # fmt: skip
    if direction is None:
        with pytest.raises(ConfigError, match="logits .* cannot share a path sweep"):
            sweep.run(run)
        return
    path = sweep.run([*run, f"intervention.direction={direction}"])
    ds = sweep.open_results(path).load()
    assert ds["paths"].dims == ("metric", "layer", "head", "prompt")
    w = worker([*over, "grid.components=[resid_pre]"])
    cfg = w.model.cfg
    shape = GraphShape(cfg.n_layers, cfg.n_heads, getattr(cfg, "n_key_value_heads", 0) or 0)
    by_name = {r.name: r for r in receivers(shape)}
    chosen = [by_name[n] for n in ds.attrs["path_receivers"]]
    last = max(r.layer for r in chosen)
    assert list(ds["layer"].values) == list(range(last))  # senders: layers before the last
    senders = [(layer, h) for layer in range(last) for h in range(cfg.n_heads)]
    base = "corrupted" if direction == "denoise" else "clean"
    want = path_logit_diffs(w.model, w.task, senders, chosen, base)
    got = ds["paths"].sel(metric="logit_diff").stack(s=("layer", "head")).transpose("s", ...)
    np.testing.assert_allclose(got.values, want, atol=1e-4)
    assert np.abs(want - want.mean(0)).max() > 1e-3  # senders differ: not a constant


@pytest.mark.parametrize("which", ["native", "llama"])
def test_paths_one_position_at_a_time_equal_the_reference(
    tmp_path: Path, gpt2_dir: Path, family_dir, which: str
) -> None:
    """grid.positions: the sender's output at one token of each prompt at a time (negative:
    from each prompt's own end; NaN where a prompt is too short), noising by default as
    the paper's recipe."""
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    over = model_overrides(which, task, gpt2_dir, family_dir)
    into = "[a2.*.q,a2.h1.v]" if which == "native" else "[a1.*.q,a1.g1.k]"
    w = worker([*over, "grid.components=[resid_pre]"])
    short = int(w.task.lengths.min())  # a token the shortest prompts do not have
    path = sweep.run([*over, "grid=paths", f"grid.receivers={into}",
                      f"grid.positions=[-1,{short}]", "store.prompt_block=2",
                      "runner.progress=false", "store.plots=false",
                      f"store.path={tmp_path / 'p.zarr'}"])  # fmt: skip
    ds = sweep.open_results(path).load()
    assert ds.attrs["base_run"] == "clean"  # noising: the sender's corrupted output
    assert ds["paths"].dims == ("metric", "layer", "pos", "head", "prompt")
    cfg = w.model.cfg
    shape = GraphShape(cfg.n_layers, cfg.n_heads, getattr(cfg, "n_key_value_heads", 0) or 0)
    by_name = {r.name: r for r in receivers(shape)}
    chosen = [by_name[n] for n in ds.attrs["path_receivers"]]
    senders = [(layer, h) for layer in ds["layer"].values for h in range(cfg.n_heads)]
    for pos in (-1, short):
        want = path_logit_diffs(w.model, w.task, senders, chosen, "clean", pos)
        got = ds["paths"].sel(metric="logit_diff", pos=pos).stack(s=("layer", "head"))
        np.testing.assert_allclose(got.transpose("s", ...).values, want, atol=1e-4)
    assert np.isnan(ds["paths"].sel(pos=short).values).any()  # the shortest prompts lack it
    assert np.abs(ds["paths"].sel(pos=-1) - ds["clean_baseline"]).max() > 1e-3


def test_paths_at_named_positions_name_their_receivers(tmp_path: Path) -> None:
    """IOI's named positions (END: each prompt's last token) label the store's pos axis,
    and the receivers are named in the pictures' titles and the report."""
    from sweep.cli import report
    from sweep.driver import run_config
    from sweep.results.maps import heatmap

    over = ["model=native", "model.native.n_layers=3", "task=ioi", "task.n_prompts=4",
            "grid=paths", "grid.receivers=[a2.h1.q,a2.h3.q]", "grid.positions=[S2,END]",
            "runner.progress=false", "store.plots=false",
            f"store.path={tmp_path / 'p.zarr'}"]  # fmt: skip
    summary = run_config(sweep.compose_config(over))
    ds = sweep.open_results(summary.path).load()
    assert list(ds["pos"].values) == ["S2", "END"]
    end = ds["paths"].sel(pos="END")
    last = sweep.open_results(sweep.run([*over[:-1], "grid.positions=[-1]",
                                         f"store.path={tmp_path / 'q.zarr'}"]))  # fmt: skip
    np.testing.assert_allclose(end.values, last["paths"].sel(pos=-1).values, atol=1e-6)
    title = heatmap(ds, "paths").title
    assert "paths into a2.h1.q, a2.h3.q" in title
    assert "path patching into a2.h1.q, a2.h3.q" in report(summary)


def test_the_previous_token_head_reaches_the_induction_keys() -> None:
    """On the shipped model, path patching each layer-0 head into every layer-1 key input:
    the head that attends one token back (found by its pattern) restores the most."""
    import torch

    path = sweep.run(["grid=paths", "grid.receivers=[a1.*.k]", "runner.progress=false",
                      "store.plots=false", "store.path=memory://paths-induction.zarr"])  # fmt: skip
    ds = sweep.open_results(path)
    best = int(top_cells(ds, 1).loc[0, "head"])
    w = worker(["grid.components=[resid_pre]"])
    tokens = w.task.rows(np.arange(w.task.n_prompts))[0]
    with torch.no_grad():
        _, cache = w.model.run_with_cache(tokens)
    pattern = cache["blocks.0.attn.hook_pattern"]  # [prompt, head, q, k]
    one_back = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1))
    assert best == int(one_back.argmax())
    assert float(scaled(ds, "paths", metric="logit_diff").max()) > 0.3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grid=paths"], "grid.receivers: path patching needs receivers"),
        (["grid=paths", "grid.receivers=[m1]"], "grid.receivers: \\['m1'\\] match no receiver"),
        (["grid=paths", "grid.receivers=[a0.*.q]"], "no head comes before these receivers"),
        (["grid=paths", "grid.receivers=[a1.h0.q]", "grid.layers=[1]"],
         "grid.layers: sender layers \\[1\\] are not before any receiver"),
        (["grid=paths", "grid.receivers=[a1.h0.q]", "intervention=mean"], "intervention=mean"),
    ],
)  # fmt: skip
def test_bad_paths_are_refused_by_key(tmp_path: Path, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep.run([*overrides, f"store.path={tmp_path / 'p.zarr'}", "runner.progress=false"])
    assert not (tmp_path / "p.zarr").exists()
