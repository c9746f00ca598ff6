"""One definition of an effect for prompts of different lengths: each prompt against its
own baseline, over the prompts that reach the cell. Checked on a store whose right answer
is known by construction, and on a real sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import NAMES, native_prompts, write_task

import sweep
from sweep import analysis, plot
from sweep.cli import report
from sweep.driver import SweepSummary


def _store(path: Path) -> Path:
    """Two prompts, 3 and 6 tokens. Prompt 0's runs give 0 (corrupted) and 1 (clean),
    prompt 1's 10 and 11. Position 1 restores the clean run in both (effect +1); position
    4, which only prompt 1 reaches, changes nothing (value 10, effect 0), though its
    value is 5 above the corrupted baseline averaged over both prompts."""
    values = np.full((1, 1, 6, 2), np.nan, dtype=np.float32)  # metric, layer, pos, prompt
    values[0, 0, :3, 0] = [0.0, 1.0, 0.2]  # prompt 0
    values[0, 0, :, 1] = [10.0, 11.0, 10.0, 10.0, 10.0, 10.5]  # prompt 1
    tokens = np.array([["a", "b", "c", "", "", ""], list("abcdef")], dtype=object)
    ds = xr.Dataset(
        {
            "resid_pre": (("metric", "layer", "pos", "prompt"), values),
            "clean_baseline": (("metric", "prompt"), np.array([[1.0, 11.0]], dtype=np.float32)),
            "corrupted_baseline": (("metric", "prompt"), np.array([[0.0, 10.0]], np.float32)),
        },
        coords={
            "metric": ["logit_diff"],
            "layer": [0],
            "pos": np.arange(6),
            "head": [0],
            "prompt": [0, 1],
            "prompt_length": ("prompt", [3, 6]),
            "clean_token": (("prompt", "pos"), tokens),
            "corrupted_token": (("prompt", "pos"), tokens),
        },  # fmt: skip
        attrs={"components": ["resid_pre"], "base_run": "corrupted", "patchsweep_format": 2},
    )
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    return path


def test_top_cells_compare_each_prompt_with_its_own_baseline(tmp_path: Path) -> None:
    ds = sweep.open_results(_store(tmp_path / "s.zarr")).load()
    top = analysis.top_cells(ds, k=6)
    assert top.iloc[0][["pos", "effect", "n"]].tolist() == [1, pytest.approx(1.0), 2]
    by_pos = top.set_index("pos")
    assert by_pos.loc[4, "effect"] == pytest.approx(0.0) and by_pos.loc[4, "n"] == 1
    assert by_pos.loc[5, "effect"] == pytest.approx(0.5)
    # The old definition (mean value against the baseline over all prompts) put 4 on top.
    naive = ds["resid_pre"].mean("prompt") - ds["corrupted_baseline"].mean()
    assert float(abs(naive.sel(pos=4)).squeeze()) > float(abs(naive.sel(pos=1)).squeeze())
    stats = analysis.effect_summary(ds, "resid_pre").sel(layer=0)
    assert stats["n"].values.tolist() == [2, 2, 2, 1, 1, 1]
    assert stats["mean"].sel(pos=2).item() == pytest.approx(0.1)  # (0.2 - 0 + 10 - 10) / 2


def test_normalized_and_heatmaps_use_the_same_prompts(tmp_path: Path) -> None:
    ds = sweep.open_results(_store(tmp_path / "s.zarr")).load()
    norm = analysis.normalized(ds, "resid_pre").sel(metric="logit_diff", layer=0)
    np.testing.assert_allclose(norm.values, [0.0, 1.0, 0.1, 0.0, 0.0, 0.5], atol=1e-6)
    h = plot.heatmap(ds, "resid_pre", "logit_diff")
    np.testing.assert_allclose(h.values[0], norm.values, atol=1e-6)


def test_the_command_line_summary_ranks_by_the_same_effect(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    summary = SweepSummary(path, 1, 1, 0, 6, 1.0, 1.0, 1, 1, 0, "fast")
    text = report(summary, top=2)
    assert "clean 6.000, corrupted 5.000 (mean over all 2 prompts)" in text
    first = next(line for line in text.splitlines() if line.startswith("  "))
    assert first.strip() == (
        "resid_pre[layer=0, pos=1]: effect +1.000, restored +1.00 (value 6.000, n=2)"
    )


TEMPLATES = [
    "When {a} and {b} went to the store, {s} gave a drink to",
    "Then {a} met {b} at the park near the old school, and later {s} handed a ball to",
]


def test_minus_one_is_each_prompts_own_last_token(tmp_path: Path) -> None:
    rows = []
    for i, t in enumerate(TEMPLATES * 2):
        a, b, c, d, e = (NAMES[(i + k) % len(NAMES)] for k in range(5))
        rows.append({"clean": t.format(a=a, b=b, s=b), "corrupted": t.format(a=c, b=d, s=e),
                     "answer": " " + a, "wrong": " " + b})  # fmt: skip
    task = write_task(tmp_path / "task.jsonl", rows)
    base = [*native_prompts(task, 2), "grid.components=[resid_pre,z_by_pos]",
            "runner.progress=false"]  # fmt: skip
    full = sweep.open_results(sweep.run([*base, f"store.path={tmp_path / 'full'}"]))
    last = sweep.open_results(
        sweep.run([*base, "grid.positions=[-1,-2]", f"store.path={tmp_path / 'last'}"])
    )
    lengths = full["prompt_length"].values
    assert len(set(lengths)) == 2
    for name in ("resid_pre", "z_by_pos"):
        for p, n in enumerate(lengths):
            for rel in (-1, -2):
                got = last[name].sel(pos=rel, prompt=p).values
                want = full[name].sel(pos=n + rel, prompt=p).values
                np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{name} {p} {rel}")
    tokens = last["clean_token"].sel(pos=-1).values
    assert list(tokens) == [" to"] * 4  # each prompt's own last token
    assert last["resid_pre"].notnull().all()  # every prompt reaches its own -1
