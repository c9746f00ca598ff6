"""Each intervention on its own scale: denoising reads as the fraction of the clean
behaviour restored, noising and ablations as the fraction destroyed; 0 is no change for
all of them, 1 the clean (restored) or corrupted (destroyed) level. Checked at both ends on
the shipped induction model, where clean and corrupted differ in one token only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep import analysis, plot
from tests.zygote import python_m

# One prompt; layer 0's residual stream is a token's embedding, so patching it at the one
# changed position is the whole other run, and at any other position changes nothing.
BASE = ["task.n_prompts=1", "grid.components=[resid_pre]", "grid.layers=[0]",
        "runner.progress=false", "store.plots=false"]  # fmt: skip


def changed_position(ds) -> int:
    clean, corrupted = ds["clean_token"].values[0], ds["corrupted_token"].values[0]
    (where,) = np.flatnonzero(clean != corrupted)
    return int(where)


def run(tmp_path: Path, name: str, *over: str):
    return sweep.open_results(sweep.run([*BASE, *over, f"store.path={tmp_path / name}"]))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("scales")
    denoise = run(tmp, "denoise.zarr")
    reference = tmp / "reference.jsonl"  # the corrupted prompt alone: its mean is itself
    reference.write_text(json.dumps({"prompt": str(denoise["corrupted_text"][0].values)}) + "\n")
    return {
        "patch denoise": denoise,
        "patch noise": run(tmp, "noise.zarr", "intervention.direction=noise"),
        "mean ablation": run(
            tmp, "mean.zarr", "intervention=mean", f"intervention.reference={reference}"
        ),  # fmt: skip
        "zero ablation": run(tmp, "zero.zarr", "intervention=zero"),
    }


@pytest.mark.parametrize(
    ("name", "kind"),
    [("patch denoise", "restored"), ("patch noise", "destroyed"), ("mean ablation", "destroyed")],
)
def test_each_scale_is_0_where_nothing_changes_and_1_at_the_other_runs_level(
    stores: dict, name: str, kind: str
) -> None:
    ds = stores[name]
    assert analysis.scale(ds).kind == kind and analysis.scale(ds).intervention == name
    values = analysis.scaled(ds, "resid_pre", metric="logit_diff").sel(layer=0).values
    per_prompt = analysis.scaled(ds, "resid_pre", per_prompt=True, metric="logit_diff")
    p = changed_position(ds)
    assert abs(float(ds["clean_baseline"][0, 0] - ds["corrupted_baseline"][0, 0])) > 1
    np.testing.assert_allclose(values[p], 1.0, atol=1e-4)  # fully changed
    np.testing.assert_allclose(np.delete(values, p), 0.0, atol=1e-4)  # no change
    np.testing.assert_allclose(per_prompt.sel(layer=0).values[:, 0], values, atol=1e-4)


def test_zero_ablation_reads_as_destroyed_from_the_clean_run(stores: dict) -> None:
    ds = stores["zero ablation"]
    clean, corrupted = (float(ds[f"{r}_baseline"][0, 0]) for r in ("clean", "corrupted"))
    value = ds["resid_pre"].sel(metric="logit_diff", layer=0).values[:, 0]
    want = (clean - value) / (clean - corrupted)
    got = analysis.scaled(ds, "resid_pre", metric="logit_diff").sel(layer=0).values
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert analysis.scale(ds).kind == "destroyed"


def test_titles_colour_bars_and_top_cells_name_the_scale(stores: dict) -> None:
    for name, ds in stores.items():
        h = plot.heatmap(ds, "resid_pre", "logit_diff")
        sc = analysis.scale(ds)
        assert h.headline == f"resid_pre: logit_diff, fraction {sc.kind} by {name}"
        assert h.title == f"{h.headline}, mean over the prompts that reach each cell (of 1)"
        fig = plot.figure(h)
        assert fig.axes[1].get_ylabel() == sc.bar  # the colour bar
        np.testing.assert_allclose(
            h.values[0], analysis.scaled(ds, "resid_pre", metric="logit_diff").values[0]
        )
        if name != "zero ablation":  # zeroing any token's embedding changes something
            top = analysis.top_cells(ds, 1)
            assert top["pos"][0] == changed_position(ds)
            assert top["scaled"][0] == pytest.approx(1.0, abs=1e-4)


def test_a_tiny_or_inverted_gap_is_counted_in_a_warning(tmp_path: Path) -> None:
    over = ["model=native", "task=ioi", "grid.components=[resid_pre]", "grid.layers=[0]",
            "grid.positions=[END]", "runner.progress=false", "store.plots=false",
            f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    gap = (ds["clean_baseline"] - ds["corrupted_baseline"]).sel(metric="logit_diff").values
    bad = int(((gap * gap.mean() <= 0) | (np.abs(gap) < 0.1 * abs(gap.mean()))).sum())
    assert bad > 0  # random weights: clean and corrupted barely differ
    line = analysis.gap_warning(ds)
    assert line.startswith(f"warning: {bad} of 16 prompts have a clean-corrupted gap")
    page = plot.page(ds.load(), "s.zarr")
    assert f"{bad} of 16 prompts" in page  # in the map's title and beside the top cells
    healthy = sweep.open_results(sweep.run([*BASE, f"store.path={tmp_path / 'i.zarr'}"]))
    assert analysis.gap_warning(healthy) == ""


def test_the_command_line_prints_the_scale_of_its_intervention(tmp_path: Path) -> None:
    done = python_m(["sweep", *BASE, "intervention.direction=noise",
                     f"store.path={tmp_path / 's.zarr'}"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "(patch noise)" in out
    assert "destroyed = fraction of the clean behaviour destroyed (0 = no change" in out
    assert "destroyed +1.00 (value" in out
