"""sweep.analysis on a real store: normalisation, statistics over prompts, top cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import ioi_rows, native_prompts, write_task

import sweep
from sweep import analysis
from sweep.errors import ConfigError


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    tmp = tmp_path_factory.mktemp("analysis")
    task = write_task(tmp / "task.jsonl", ioi_rows(8))  # one template: equal lengths
    path = sweep.run(
        [
            *native_prompts(task),
            "grid.components=[resid_pre,resid_post,z]",
            f"store.path={tmp / 'store'}",
            "runner.progress=false",
        ]
    )
    return sweep.open_results(path).load()


def test_normalized_is_one_where_the_clean_run_is_restored(ds: xr.Dataset) -> None:
    """Patching the final residual at the last position restores the clean logits (1);
    patching layer 0's first token (BOS, the same in both runs) changes nothing (0)."""
    last_layer, last_pos = int(ds["layer"][-1]), int(ds["pos"][-1])
    per_prompt = analysis.normalized(ds, "resid_post", per_prompt=True).sel(metric="logit_diff")
    np.testing.assert_allclose(per_prompt.sel(layer=last_layer, pos=last_pos), 1.0, atol=1e-4)
    np.testing.assert_allclose(per_prompt.sel(layer=0, pos=0), 0.0, atol=1e-4)
    pooled = analysis.normalized(ds, "resid_post").sel(metric="logit_diff", layer=0, pos=0)
    assert pooled.dims == ()  # one number per cell
    np.testing.assert_allclose(pooled, 0.0, atol=1e-4)
    # Per cell: the mean effect over the mean baseline gap of the same prompts.
    clean = ds["clean_baseline"].sel(metric="logit_diff")
    corr = ds["corrupted_baseline"].sel(metric="logit_diff")
    x = ds["z"].sel(metric="logit_diff")
    want = (x - corr).mean("prompt") / (clean - corr).mean("prompt")
    np.testing.assert_allclose(analysis.normalized(ds, "z").sel(metric="logit_diff"), want)


def test_every_function_takes_one_metric(ds: xr.Dataset) -> None:
    one = analysis.normalized(ds, "z", metric="logit_diff")
    assert "metric" not in one.dims
    xr.testing.assert_allclose(one, analysis.normalized(ds, "z").sel(metric="logit_diff"))
    eff = analysis.effect(ds, "z", metric="logit_diff")
    assert "metric" not in eff.dims
    xr.testing.assert_allclose(eff, analysis.effect(ds, "z").sel(metric="logit_diff"))
    with pytest.raises(ValueError, match="metric 'prob' is not in this store; it has: logit_diff"):
        analysis.normalized(ds, "z", metric="prob")


def test_a_bad_key_from_python_is_our_one_line_error(tmp_path: Path) -> None:
    """sweep.run raised Hydra's own multi-line ConfigCompositionException."""
    with pytest.raises(ConfigError, match=r"^grid\.colour: no such key"):
        sweep.run(["grid.colour=red", f"store.path={tmp_path / 's'}"])
    with pytest.raises(ConfigError, match=r"^model=nope: no such option; choose from: hf, "):
        sweep.run(["model=nope"])
    assert not (tmp_path / "s").exists()


def test_summarize_mean_sem_and_bootstrap(ds: xr.Dataset) -> None:
    x = ds["z"].sel(metric="logit_diff")
    s = analysis.summarize(x, n_boot=4000, seed=1)
    values = x.values  # [layer, head, prompt]
    np.testing.assert_allclose(s["mean"], values.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(s["sem"], values.std(-1, ddof=1) / np.sqrt(8), rtol=1e-6)
    assert (s["ci_low"] <= s["mean"]).all() and (s["mean"] <= s["ci_high"]).all()
    assert (s["ci_low"] >= values.min(-1)).all() and (s["ci_high"] <= values.max(-1)).all()
    # With 8 prompts the 95% percentile interval is near mean +- 1.96 sem (a bit narrower:
    # the bootstrap's spread is the population sd / sqrt(n), without ddof).
    width = (s["ci_high"] - s["ci_low"]).values
    normal = 2 * 1.96 * s["sem"].values
    assert np.median(width / normal) == pytest.approx(0.9, abs=0.15)
    assert analysis.summarize(x, seed=1)["ci_low"].equals(analysis.summarize(x, seed=1)["ci_low"])


def test_summarize_skips_nan_prompts() -> None:
    x = xr.DataArray([[1.0, 3.0, np.nan], [2.0, 2.0, 2.0]], dims=("pos", "prompt"))
    s = analysis.summarize(x)
    assert s["n"].values.tolist() == [2, 3]
    assert s["mean"].values.tolist() == [2.0, 2.0]
    assert s["ci_low"].values[1] == s["ci_high"].values[1] == 2.0  # constant: no spread


def test_bootstrap_interval_ignores_prompts_that_do_not_reach_the_cell() -> None:
    reached = [0.1, 0.5, 1.2, 2.0]
    alone = analysis.summarize(xr.DataArray([reached], dims=("pos", "prompt")), seed=3)
    # The same four values among 12 prompts that end before this position (NaN here), and
    # spread over the prompt axis in another order; a second cell reached by all 16.
    mixed = np.full((2, 16), np.nan)
    mixed[0, [2, 5, 11, 15]] = reached
    mixed[1] = np.linspace(-1.0, 1.0, 16)
    among = analysis.summarize(xr.DataArray(mixed, dims=("pos", "prompt")), seed=3)
    for bound in ("ci_low", "ci_high"):
        assert among[bound].values[0] == pytest.approx(alone[bound].values[0], abs=1e-12)
    assert among["n"].values.tolist() == [4, 16]
    # Every resample draws 4 of the 4 reaching values: the interval is inside their range
    # and narrower than min..max (the old code drew 16 with replacement, averaging the few
    # non-NaN draws, which reached the extremes).
    low, high = alone["ci_low"].values[0], alone["ci_high"].values[0]
    assert min(reached) < low < high < max(reached)


def test_top_cells_ranks_every_component(ds: xr.Dataset) -> None:
    top = analysis.top_cells(ds, k=5)
    base = ds["corrupted_baseline"].sel(metric="logit_diff").values  # [prompt]
    brute = []
    for name in ("resid_pre", "resid_post", "z"):
        values = ds[name].sel(metric="logit_diff").values  # [..., prompt]
        brute += [abs(float(v)) for v in (values - base).mean(-1).ravel()]
    assert top["effect"].abs().tolist() == pytest.approx(sorted(brute, reverse=True)[:5])
    r = top.iloc[0]
    cell = analysis.cell_of(r)
    assert ds[r["component"]].sel(metric="logit_diff", **cell).mean() == pytest.approx(r["value"])
    assert list(top.columns) == [
        "component", "layer", "pos", "head", "value", "effect", "scaled", "n"
    ]  # fmt: skip
    assert (top["n"] == 8).all()
    gap = (ds["clean_baseline"] - ds["corrupted_baseline"]).sel(metric="logit_diff").mean()
    assert top["scaled"].tolist() == pytest.approx((top["effect"] / float(gap)).tolist())
    assert top["head"].isna().sum() + top["pos"].isna().sum() == 5  # one dim per component


def test_top_cells_of_a_noising_store_are_relative_to_the_clean_run(tmp_path: Path) -> None:
    path = sweep.run(
        [
            "model=native",
            "model.native.n_layers=2",
            "task=ioi",
            "task.n_prompts=4",
            "grid.components=[resid_pre]",
            "intervention.direction=noise",
            f"store.path={tmp_path / 'noise'}",
            "runner.progress=false",
        ]
    )
    noise = sweep.open_results(path)
    top = analysis.top_cells(noise, k=1)
    cell = noise["resid_pre"].sel(metric="logit_diff", **analysis.cell_of(top.iloc[0]))
    reach = cell.notnull()  # IOI templates differ in length: not every prompt has the cell
    clean = float(noise["clean_baseline"].sel(metric="logit_diff").where(reach).mean())
    assert top["n"][0] == int(reach.sum())
    assert top["effect"][0] == pytest.approx(top["value"][0] - clean, abs=1e-5)
