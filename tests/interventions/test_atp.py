"""Attribution patching against exact patching, and the verification of its top cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import sweep
from sweep import analysis, plot
from sweep.analysis import cell_of, top_cells
from tests.zygote import python_m

COMPONENTS = ["resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "z_by_pos", "v", "pattern"]


def _pair(
    tmp: Path, model: list[str], *atp: str, direction: str = "denoise"
) -> tuple[xr.Dataset, xr.Dataset]:
    """AtP estimates and exact patching of the same grid, in the same direction."""
    base = [
        "task=ioi",
        "task.templates=all",  # the figures below were measured over mixed templates
        f"intervention.direction={direction}",
        *model,
        "task.n_prompts=16",
        f"grid.components=[{','.join(COMPONENTS)}]",
        "runner.progress=false",
    ]
    est = sweep.run([*base, "intervention=atp", *atp, f"store.path={tmp / 'atp'}"])
    exact = sweep.run([*base, f"store.path={tmp / 'exact'}"])
    return sweep.open_results(est), sweep.open_results(exact)


def _effects(ds: xr.Dataset, names: list[str]) -> np.ndarray:
    """Mean over prompts of every cell of ``names``, in one vector."""
    parts = [ds[n].sel(metric="logit_diff").mean("prompt").values.ravel() for n in names]
    return np.concatenate(parts)


def _per_prompt(ds: xr.Dataset, name: str) -> np.ndarray:
    """Every cell's effect on every prompt, in one vector."""
    return analysis.effect(ds, name, metric="logit_diff").values.ravel()


def _r(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~np.isnan(a) & ~np.isnan(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def test_atp_tracks_exact_patching(tmp_path: Path, gpt2_dir: Path) -> None:
    """On the tiny GPT-2 (weights drawn large, so attention saturates and MLPs bend) we
    measured r = 0.95-0.97 over all these cells (IOI seeds 0-3), 0.87-0.99 per component
    over its cells' prompt means; z, v and pattern have 8 cells (2 layers x 4 heads), whose
    8 means correlate anywhere from 0.2 to 0.97 by seed, so they are judged over every
    cell x prompt effect (0.85-0.90). k, left out here, is 0.09: a key moves attention
    through a saturated softmax, AtP's known failure.
    The floors leave room for numerical noise and fail for a mis-indexed or mis-signed
    estimate, which decorrelates (r < 0.3)."""
    est, exact = _pair(tmp_path, [f"model.name={gpt2_dir}"])
    assert est.attrs["intervention"] == "atp"
    assert _r(_effects(est, COMPONENTS), _effects(exact, COMPONENTS)) > 0.85
    for name in COMPONENTS:
        if est[name].isel(metric=0, prompt=0).size >= 16:
            assert _r(_effects(est, [name]), _effects(exact, [name])) > 0.7, name
        else:  # a head grid of 8 cells: 8 means are too few for a stable correlation
            assert _r(_per_prompt(est, name), _per_prompt(exact, name)) > 0.7, name
    # Not a copy: a first-order estimate differs from the exact values.
    assert np.nanmax(np.abs(est["resid_pre"].values - exact["resid_pre"].values)) > 1e-3


def test_atp_verifies_its_top_cells_exactly(tmp_path: Path) -> None:
    k = 6
    est, exact = _pair(
        tmp_path, ["model=native", "model.native.n_layers=3"], f"intervention.verify_top_k={k}"
    )
    top = top_cells(est, k)
    verified = 0
    for name in COMPONENTS:
        checked = est[f"{name}_exact"].sel(metric="logit_diff")
        cells = checked.notnull().any("prompt")
        verified += int(cells.sum())
        np.testing.assert_allclose(
            checked.where(cells).values,
            exact[name].sel(metric="logit_diff").where(cells).values,
            atol=1e-5,
            equal_nan=True,
        )
    assert verified == k
    # The verified cells are exactly the top-k estimated ones.
    for _, r in top.iterrows():
        where = cell_of(r)
        assert est[f"{r['component']}_exact"].sel(metric="logit_diff", **where).notnull().any()
    # Side by side: each verified cell's estimated and exact effect, and their correlation.
    table = analysis.verified(est)
    assert len(table) == k
    for _, r in table.iterrows():
        where = {d: r[d] for d in ("layer", "pos", "head") if d in r and not pd.isna(r[d])}
        name = r["component"]
        exact_effect = analysis.effect(exact, name, metric="logit_diff").sel(**where)
        est_effect = analysis.effect(est, name, metric="logit_diff").sel(**where)
        assert r["exact"] == pytest.approx(float(exact_effect.mean()), abs=1e-5)
        assert r["estimate"] == pytest.approx(float(est_effect.mean()), abs=1e-5)
        assert r["n"] == int(exact_effect.count()) == int(est_effect.count())
    assert list(table["exact"].abs()) == sorted(table["exact"].abs(), reverse=True)
    want = np.corrcoef(table["estimate"], table["exact"])[0, 1]
    assert table.attrs["correlation"] == pytest.approx(want)


def test_every_atp_output_says_it_is_an_estimate(tmp_path: Path) -> None:
    store = tmp_path / "atp.zarr"
    done = python_m(["sweep", "model=native", "task=ioi", "intervention=atp",
                     "intervention.verify_top_k=3", "grid.components=[resid_pre,z]",
                     "runner.progress=false", f"store.path={store}"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    ds = sweep.open_results(store)
    top = [line for line in out.splitlines() if line.startswith("  ") and "value" in line]
    assert len(top) == 5 and all(": estimated effect " in line for line in top)
    assert "top cells by |AtP's estimated effect| on logit_diff (AtP denoise)" in out
    table = analysis.verified(ds)
    assert "verified by exact patching (3 cells" in out
    for _, r in table.iterrows():
        assert f": estimate {r['estimate']:+.3f}, exact {r['exact']:+.3f} (n=16)" in out
    r = table.attrs["correlation"]
    assert f"correlation of estimate and exact over these 3 cells: r = {r:.3f}" in out
    for name in ("resid_pre", "z"):
        assert plot.heatmap(ds, name, "logit_diff").headline.endswith("by AtP denoise (estimate)")
    page = (tmp_path / "atp.plots" / "index.html").read_text()
    titles = page.count("by AtP denoise")  # each map's title, in every view the page holds
    assert titles >= 2 and page.count("by AtP denoise (estimate)") == titles


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_atp_native_model_is_near_linear(tmp_path: Path, direction: str) -> None:
    """The default native model (small random weights) is close to linear: measured
    r >= 0.99 in both directions."""
    est, exact = _pair(tmp_path, ["model=native", "model.native.n_layers=3"], direction=direction)
    assert est.attrs["base_run"] == ("clean" if direction == "noise" else "corrupted")
    assert _r(_effects(est, COMPONENTS), _effects(exact, COMPONENTS)) > 0.98
