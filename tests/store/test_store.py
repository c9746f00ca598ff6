"""The store opens with plain xarray, with the dims, coordinates and attrs of DESIGN.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

import sweep
from sweep.errors import StoreMismatchError
from sweep.tasks.prompts import read_prompts


def _overrides(task, path) -> list[str]:
    return [
        "model=native",
        "task=prompts",
        f"task.path={task}",
        "grid.components=[resid_pre,z,z_by_pos]",
        "grid.layers=[1]",
        "grid.positions=[0,-1]",
        "grid.heads=[2,3]",
        "metric.names=[logit_diff,prob]",
        f"store.path={path}",
        "runner.progress=false",
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from helpers import ioi_rows, write_task

    tmp = tmp_path_factory.mktemp("store")
    task = write_task(tmp / "task.jsonl", ioi_rows(3))
    return sweep.run(_overrides(task, tmp / "out.zarr")), task


def test_open_zarr_dims_and_queries(store) -> None:
    path, _ = store
    ds = xr.open_zarr(path)
    assert ds["resid_pre"].dims == ("metric", "layer", "pos", "prompt")
    assert ds["z"].dims == ("metric", "layer", "head", "prompt")
    assert ds["z_by_pos"].dims == ("metric", "layer", "pos", "head", "prompt")
    assert ds["clean_baseline"].dims == ("metric", "prompt")
    assert ds["z"].dtype == np.float32
    one = ds["z"].sel(metric="logit_diff", layer=1, head=2).mean("prompt")
    assert one.shape == () and np.isfinite(float(one))
    by_pos = ds["z_by_pos"].sel(metric="logit_diff", layer=1, pos=-1, head=3)
    assert by_pos.dims == ("prompt",) and by_pos.notnull().all()


def test_coordinates_follow_the_grid_restriction(store) -> None:
    path, task = store
    ds = sweep.open_results(path)
    assert list(ds["layer"].values) == [1]
    assert list(ds["pos"].values) == [0, -1]  # -1: each prompt's own last token
    assert list(ds["head"].values) == [2, 3]
    assert list(ds["prompt"].values) == [0, 1, 2]
    assert list(ds["metric"].values) == ["logit_diff", "prob"]
    rows = read_prompts(str(task))
    # Position -1 is the last token of each prompt: " to"; position 0 is BOS.
    assert list(ds["clean_token"].sel(pos=-1).values) == [" to"] * 3
    assert ds["clean_token"].sel(prompt=0, pos=0).item() == "<|endoftext|>"
    assert rows[0].clean.startswith("When")


def test_attrs_hold_config_model_and_versions(store) -> None:
    path, task = store
    ds = xr.open_zarr(path)
    cfg = yaml.safe_load(ds.attrs["config"])
    assert cfg["task"]["path"] == str(task)
    assert cfg["grid"]["heads"] == [2, 3]
    assert ds.attrs["model"] == "native"
    assert ds.attrs["patchsweep_version"] == sweep.__version__
    assert ds.attrs["transformer_lens_version"].startswith("4.")
    assert json.loads(ds.attrs["patchsweep_fingerprint"])["grid"]["layers"] == [1]


def test_baselines_match_the_unpatched_cells(store) -> None:
    """A patch that changes nothing gives the corrupted baseline back."""
    path, _ = store
    ds = sweep.open_results(path)
    # Position 0 is BOS in clean and corrupted alike: patching it changes nothing.
    np.testing.assert_allclose(
        ds["resid_pre"].sel(metric="logit_diff", layer=1, pos=0).values,
        ds["corrupted_baseline"].sel(metric="logit_diff").values,
        atol=1e-5,
    )
    assert not np.allclose(ds["clean_baseline"].values, ds["corrupted_baseline"].values, atol=1e-3)


def test_rerun_computes_nothing_and_keeps_values(store) -> None:
    path, task = store
    before = sweep.open_results(path).load()
    summary = sweep.run_config(sweep.compose_config(_overrides(task, path)))
    assert summary.units_run == 0 and summary.units_total == 3
    xr.testing.assert_identical(before, sweep.open_results(path).load())


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_store_path_may_be_an_fsspec_url(tmp_path, task_file, scheme) -> None:
    """The same sweep into a URL store: equal values, resumable, opened by URL. memory://
    is an fsspec filesystem with no rename, like an object store."""
    local = sweep.open_results(sweep.run(_overrides(task_file, tmp_path / "local.zarr")))
    url = f"memory://{tmp_path.name}/s.zarr"
    if scheme == "file":
        url = (tmp_path / "url.zarr").as_uri()
    path = sweep.run(_overrides(task_file, url))
    assert str(path) == (str(tmp_path / "url.zarr") if scheme == "file" else url)
    ds = sweep.open_results(url)
    assert ds.attrs["patchsweep_fingerprint"] == local.attrs["patchsweep_fingerprint"]
    for name in ("resid_pre", "z", "z_by_pos"):
        np.testing.assert_array_equal(ds[name].values, local[name].values)
    summary = sweep.run_config(sweep.compose_config(_overrides(task_file, url)))
    assert summary.units_run == 0 and summary.units_total > 0  # resumed: nothing left
    # sweep.status by URL; cells x prompts counts each cell once, whatever the metrics:
    # resid_pre 2 positions + z 2 heads + z_by_pos 2 x 2, one layer.
    state = sweep.status(url)
    assert state.cell_prompts == ((2 + 2 + 4) * ds.sizes["prompt"],) * 2
    assert state.units_done == {c: (1, 1) for c in ("resid_pre", "z", "z_by_pos")}
    with pytest.raises(StoreMismatchError, match=r"different config \(grid\.heads: store has"):
        sweep.run([*_overrides(task_file, url), "grid.heads=[2]"])


def test_half_made_url_store_is_not_taken_for_a_store(tmp_path, task_file) -> None:
    """A creation cut off before its fingerprint (written last) is refused, not resumed."""
    url = f"memory://{tmp_path.name}/half.zarr"
    zarr.open_group(url, mode="w").attrs["patchsweep_format"] = 2
    with pytest.raises(StoreMismatchError, match="creation never finished"):
        sweep.run(_overrides(task_file, url))
    path = sweep.run([*_overrides(task_file, url), "store.overwrite=true"])
    assert sweep.open_results(path)["resid_pre"].notnull().all()


def test_open_dataset_loads_only_the_variables_asked_for(store) -> None:
    """``load=``: those data variables as numpy, the others left out (issue 34: a circuit
    store's curve is recorded from its one variable)."""
    from sweep.store.read import open_dataset

    path, _ = store
    full = sweep.open_results(path).load()
    name = next(iter(full.data_vars))
    ds = open_dataset(path, load=[name])
    assert list(ds.data_vars) == [name]
    assert isinstance(ds[name].variable._data, np.ndarray)
    xr.testing.assert_identical(ds[name].load(), full[name])
