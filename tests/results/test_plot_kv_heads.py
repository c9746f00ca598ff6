"""Pictures of a grouped-query checkpoint: ``k``/``v`` maps are labelled by key/value head
(fewer than the query heads), and ``k_by_pos``/``v_by_pos`` get one row per layer and
key/value head, like ``z_by_pos``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xarray as xr
from helpers import ioi_rows, write_task

import sweep
from sweep import plot
from sweep.components import COMPONENTS
from tests.zygote import python_m


@pytest.fixture(scope="module")
def gqa_store(family_dir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gqa_plot")
    task = write_task(tmp / "task.jsonl", ioi_rows(2))
    return Path(
        sweep.run(
            [
                "model=hf",
                f"model.name={family_dir('llama')}",
                "task=prompts",
                f"task.path={task}",
                f"grid.components=[{','.join(COMPONENTS)}]",
                f"store.path={tmp / 's.zarr'}",
                "store.plots=false",
                "runner.progress=false",
            ]
        )  # fmt: skip
    )


def test_kv_head_maps_are_labelled_by_key_value_head(gqa_store: Path) -> None:
    ds = xr.open_zarr(gqa_store).load()
    kv = [f"KV{int(h)}" for h in ds["kv_head"].values]
    assert len(kv) == 2 and ds.sizes["head"] == 4
    for name in ("k", "v"):
        assert "kv_head" in ds[name].dims
        h = plot.heatmap(ds, name, "logit_diff")
        assert h.col_labels == kv and h.col_title == "kv_head"
        assert h.values.shape == (ds.sizes["layer"], len(kv))
        ax = plot.figure(h).axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == kv
        assert ax.get_xlabel() == "kv_head"
    for name in ("k_by_pos", "v_by_pos"):
        h = plot.heatmap(ds, name, "logit_diff")
        layers = [f"L{int(x)}" for x in ds["layer"].values]
        assert h.row_labels == [f"{la}{k}" for la in layers for k in kv]
        assert h.row_title == "layer, kv_head"
        assert h.values.shape == (len(layers) * len(kv), ds.sizes["pos"])
        ax = plot.figure(h).axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == h.row_labels
    z = plot.heatmap(ds, "z", "logit_diff")  # query heads keep their own labels
    assert z.col_labels == ["H0", "H1", "H2", "H3"] and z.col_title == "head"


def test_command_draws_every_component(gqa_store: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "plots"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = python_m(["sweep.plot", str(gqa_store), "--out", str(out_dir)], tmp_path, env, 300)
    assert out.returncode == 0, out.stderr
    drawn = xr.open_zarr(gqa_store)
    names = [c for c in COMPONENTS if c in drawn]
    assert set(names) >= {"k", "v", "k_by_pos", "v_by_pos", "z", "z_by_pos"}
    assert {p.name for p in out_dir.iterdir()} == {"index.html", *(f"{n}.png" for n in names)}
    page = (out_dir / "index.html").read_text()
    body = page.split("<body>")[1]  # the maps' axes, as plotly's figures hold them
    assert '"text":"kv_head"' in body.replace(" ", "") and '["KV0","KV1"]' in body.replace(" ", "")
    assert '"text":"layer,kv_head"' in body.replace(" ", "")
