"""``sweep.figures``: plotly maps of a small store, their axes, labels and values checked
against ``sweep.analysis`` and against the store's own arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from browser import needs_chromium, page_state

import sweep
import sweep.figures as sf
from sweep.results import analysis
from sweep.results.figures import rounded
from sweep.results.maps import heatmap
from sweep.results.plot import render
from sweep.results.report import results_lines

ARGS = ["model=native", "model.native.n_layers=2", "task=ioi", "task.n_prompts=4",
        "metric.names=[logit_diff,prob]", "grid.components=[resid_pre,z,z_by_pos]",
        "store.plots=false"]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(sweep.run([*ARGS, f"store.path={tmp_path_factory.mktemp('f') / 's.zarr'}"]))


@pytest.fixture(scope="module")
def ds(store: Path) -> xr.Dataset:
    return sweep.open_results(store).load()


def _z(fig) -> np.ndarray:
    return np.array(fig.data[0].z, dtype=float)


def test_mean_map_is_the_scaled_mean_with_layers_down_and_positions_across(ds, store) -> None:
    fig = sf.heatmap(store, "resid_pre")
    expected = analysis.scaled(ds, "resid_pre", metric="logit_diff").transpose("layer", "pos")
    np.testing.assert_allclose(_z(fig), rounded(expected.values), rtol=1e-9)
    np.testing.assert_allclose(_z(fig), expected.values, rtol=1e-3, atol=1e-6)
    trace, layout = fig.data[0], fig.layout
    assert trace.y == ("layer 0", "layer 1") and layout.yaxis.autorange == "reversed"
    clean, corrupted = ds["clean_token"].values[0], ds["corrupted_token"].values[0]
    j = int(np.flatnonzero(clean != corrupted)[0])  # the position the corruption changes
    assert trace.x[j] == f"position {j}: clean {clean[j]!r}, corrupted {corrupted[j]!r} (prompt 0)"
    assert layout.xaxis.ticktext[j] == f"{j}:{clean[j]}/{corrupted[j]}"
    assert trace.zmid == 0 and trace.colorscale[0][1] == "rgb(103,0,31)"  # red below 0
    assert trace.colorbar.title.text.startswith("fraction restored")
    assert "%{x}" in trace.hovertemplate and "%{y}" in trace.hovertemplate
    assert "mean over the prompts that reach each cell (of 4)" in layout.title.text


def test_one_prompt_the_spread_and_raw_units(ds) -> None:
    prompt = heatmap(ds, "z", "prob", prompt=2)
    own = analysis.scaled(ds, "z", per_prompt=True, metric="prob").isel(prompt=2)
    np.testing.assert_allclose(prompt.values, own.transpose("layer", "head").values)
    assert prompt.view == "prompt 2" and prompt.cols_in_words == ["head 0", "head 1", "head 2",
                                                                  "head 3"]  # fmt: skip

    # The spread: each prompt's effect over the mean gap (the terms whose mean is the map).
    one = ds.sel(metric="logit_diff")
    value, clean, corrupted = (one[v].values for v in ("z", "clean_baseline", "corrupted_baseline"))
    terms = (value - corrupted) / (clean - corrupted).mean()
    spread = heatmap(ds, "z", "logit_diff", spread=True)
    np.testing.assert_allclose(spread.values, terms.std(-1, ddof=1), rtol=1e-5)
    assert not spread.diverging and spread.bar.startswith("std of fraction restored")
    np.testing.assert_allclose(heatmap(ds, "z", "logit_diff").values, terms.mean(-1), rtol=1e-5)

    effect = heatmap(ds, "z", "logit_diff", unit="effect")
    np.testing.assert_allclose(effect.values, (value - corrupted[None, None]).mean(-1), rtol=1e-5)
    raw = heatmap(ds, "z", "logit_diff", unit="value", prompt=1)
    np.testing.assert_allclose(raw.values, value[..., 1])
    assert "value - corrupted baseline" in effect.title and raw.bar == "logit_diff"


def test_layer_head_position_rows_and_the_prompts_own_tokens(ds) -> None:
    h = heatmap(ds, "z_by_pos", "logit_diff", prompt=3)
    heads = ds.sizes["head"]
    assert h.rows_in_words[: heads + 1] == [*(f"layer 0, head {i}" for i in range(heads)),
                                            "layer 1, head 0"]  # fmt: skip
    assert h.row_labels[heads] == "L1H0" and h.col_title == "position (tokens of prompt 3)"
    tokens = ds["clean_token"].values[3]
    assert all(f"clean {t!r}" in w for t, w in zip(tokens, h.cols_in_words, strict=True))
    own = analysis.scaled(ds, "z_by_pos", per_prompt=True, metric="logit_diff").isel(prompt=3)
    np.testing.assert_allclose(h.values, own.transpose("layer", "head", "pos").values.reshape(
        -1, ds.sizes["pos"]))  # fmt: skip


def test_the_accessor_and_every_component(ds) -> None:
    fig = ds.patchsweep.heatmap("z", metric="prob", spread=True)
    np.testing.assert_array_equal(_z(fig), _z(sf.heatmap(ds, "z", metric="prob", spread=True)))
    assert set(ds.patchsweep.heatmaps()) == {"resid_pre", "z", "z_by_pos"}
    assert ds.patchsweep.top_cells(3).equals(analysis.top_cells(ds, 3))


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"component": "mlp_out"}, "component 'mlp_out' is not in this store; it has: resid_pre"),
        ({"metric": "kl"}, "metric 'kl' is not in this store; it has: logit_diff, prob"),
        ({"prompt": 4}, "prompt 4 is out of range: this store has 4 prompts (0..3)"),
        ({"unit": "percent"}, "unit 'percent' is not one of scaled, effect, value"),
    ],
)
def test_bad_requests_are_one_line_naming_them(ds, kw: dict, says: str) -> None:
    args = {"component": "z", **kw}
    with pytest.raises(ValueError) as e:
        sf.heatmap(ds, args.pop("component"), **args)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_store_with_no_finished_cells_is_one_line(ds) -> None:
    empty = ds.copy()
    for name in ("resid_pre", "z", "z_by_pos"):
        empty[name] = empty[name] * np.nan
    with pytest.raises(ValueError, match="has no finished cells yet: run"):
        sf.heatmap(empty, "z")


@needs_chromium
def test_the_page_draws_every_map_and_its_selectors_change_them(ds, store, tmp_path) -> None:
    out = render(store, tmp_path / "plots")
    page = (out / "index.html").read_text()
    url = (out / "index.html").as_uri()
    names = ["resid_pre", "z", "z_by_pos"]

    def first_rows(metric: str, **kw) -> list:
        return [rounded(heatmap(ds, n, metric, **kw).values)[0] for n in names]

    state, log = page_state(url, tmp_path / "profile")
    assert state["rendered"] == 3 and state["shown"] == "logit_diff|mean"
    assert state["requests"] == [], "the page asked for something outside itself"
    assert "Uncaught" not in log, log[-2000:]
    np.testing.assert_allclose(_flat(state["first-rows"]), _flat(first_rows("logit_diff")))

    # The selectors (a link sets them as a user would): another metric, one prompt, spread.
    state, _ = page_state(url + "#metric=prob&view=p2", tmp_path / "profile")
    assert state["shown"] == "prob|p2"
    np.testing.assert_allclose(_flat(state["first-rows"]), _flat(first_rows("prob", prompt=2)))
    assert all(t.count("prompt 2") for t in state["titles"]), state["titles"]
    state, _ = page_state(url + "#view=std", tmp_path / "profile")
    spread = first_rows("logit_diff", spread=True)
    np.testing.assert_allclose(_flat(state["first-rows"]), _flat(spread))

    # What the page says besides the maps: baselines, config, the command line's top cells.
    clean = float(ds["clean_baseline"].sel(metric="prob").mean())
    assert f"prob: clean {clean:.3f}" in page and "mean over all 4 prompts" in page
    assert "grid:" in page and "This page holds the maps of every prompt (4)." in page
    import html

    assert html.escape("\n".join(results_lines(ds))) in page


def _flat(rows: list) -> np.ndarray:
    return np.array([np.nan if x is None else x for row in rows for x in row], dtype=float)
