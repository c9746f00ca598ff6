"""Cells few prompts reach: left out of top cells, the command line's report and the
pictures (by default those under half the prompts), and each says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import mixed_rows, native_prompts, write_task

import sweep
from sweep import analysis
from sweep.results.plot import heatmap
from tests.zygote import python_m

ARGS = ["grid.components=[resid_pre,z]", "runner.progress=false", "store.plots=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("few")
    rows = mixed_rows() * 2  # six prompts of three lengths: late positions reach 2 or 4
    over = [*native_prompts(write_task(tmp / "t.jsonl", rows), 2), *ARGS]
    path = sweep.run([*over, f"store.path={tmp / 's.zarr'}"])
    return Path(str(path)), over


def _reach(ds: xr.Dataset) -> np.ndarray:
    """Per position: prompts long enough to hold it (independent of the stored values)."""
    lengths = ds["prompt_length"].values
    return np.array([(lengths > p).sum() for p in ds["pos"].values])


def test_top_cells_leave_out_cells_under_min_prompts(store) -> None:
    ds = sweep.open_results(store[0]).load()
    n = ds.sizes["prompt"]
    need = analysis.default_min_prompts(ds)
    assert need == 3 and n == 6
    reach = _reach(ds)
    assert (reach < need).any() and (reach >= need).any()  # the case that matters
    every = analysis.top_cells(ds, k=10_000)
    assert len(every) and (every["n"] >= need).all()
    layers = ds.sizes["layer"]
    few = int(((reach > 0) & (reach < need)).sum()) * layers  # resid_pre cells; z has no pos
    assert every.attrs == {"min_prompts": need, "left_out": few, "n_prompts": n}
    loose = analysis.top_cells(ds, k=10_000, min_prompts=1)
    assert (loose["n"] < need).sum() == few and len(loose) == len(every) + few
    assert analysis.top_cells(ds, k=10_000, min_prompts=n)["n"].min() == n


def test_pictures_leave_those_cells_blank_and_say_so(store) -> None:
    ds = sweep.open_results(store[0]).load()
    need, reach = analysis.default_min_prompts(ds), _reach(ds)
    h = heatmap(ds, "resid_pre", "logit_diff")
    blank = np.isnan(h.values).all(axis=0)  # per position, over layers
    np.testing.assert_array_equal(blank, reach < need)
    few = int(((reach > 0) & (reach < need)).sum()) * ds.sizes["layer"]
    assert h.blank == f"{few} cells that fewer than {need} of the 6 prompts reach"
    assert heatmap(ds, "z", "logit_diff").blank == ""  # every prompt reaches a head
    assert not np.isnan(heatmap(ds, "resid_pre", "logit_diff", min_prompts=1).values).all(0).any()


def test_the_report_says_what_it_left_out(store, tmp_path: Path) -> None:
    _, over = store
    out = python_m(["sweep", *over, f"store.path={tmp_path / 'r'}"], tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    ds = sweep.open_results(tmp_path / "r")
    reach, need = _reach(ds), analysis.default_min_prompts(ds)
    few = int(((reach > 0) & (reach < need)).sum()) * ds.sizes["layer"]
    assert f"(cells that fewer than {need} of the 6 prompts reach are left out: {few}):" in (
        out.stdout
    )
    shown = [line for line in out.stdout.splitlines() if line.startswith("  ") and "n=" in line]
    assert shown and all(int(x.rsplit("n=", 1)[1].rstrip(")")) >= need for x in shown)
    # analysis.min_prompts chooses the threshold for the report and the pictures alike; it
    # is not a result key, so the same store is reused (nothing recomputed).
    again = python_m(["sweep", *over, "analysis.min_prompts=1", "store.plots=true",
                      f"store.path={tmp_path / 'r'}"], tmp_path, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "units: 0 computed this run" in again.stdout
    assert "(cells that fewer than 1 of the 6 prompts reach are left out: 0):" in again.stdout
    page = (tmp_path / "r.plots" / "index.html").read_text()
    body = page.split("<body>")[1]
    assert body.count("mean over the prompts that reach each cell") and "blank: " not in body
