"""EAP and EAP-IG (``intervention=eap``) against autograd through the hooked TransformerLens
reference (``tests/edge_reference.py``), on a 2-layer native model and a small GPT-2
checkpoint, in both directions; steps=1 is EAP; and what the command line refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweep
from sweep.results import analysis
from tests.edge_reference import eap_logit_diffs
from tests.helpers import mixed_rows, native_prompts, worker, write_task
from tests.zygote import python_m


def _model(which: str, tmp_path: Path, gpt2_dir: Path) -> list[str]:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    if which == "gpt2":
        return ["model=hf", f"model.name={gpt2_dir}", "task=prompts", f"task.path={task}"]
    if which == "ioi":  # prompts of one length: gradients need no unpadding
        return ["model=native", "model.native.n_layers=2", "task=ioi", "task.n_prompts=4"]
    return native_prompts(task, 2)


def _scores(ds: xr.Dataset) -> np.ndarray:
    """[receiver, sender, prompt] the stored estimate minus the base run's metric."""
    base = ds.attrs["base_run"]
    return (ds["edges"] - ds[f"{base}_baseline"]).sel(metric="logit_diff").values


@pytest.mark.parametrize(("which", "direction", "steps", "ablation"),
                         [("native", "denoise", 1, "patch"), ("native", "noise", 3, "patch"),
                          ("gpt2", "denoise", 1, "patch"), ("gpt2", "denoise", 2, "patch"),
                          ("native", "noise", 1, "mean"), ("native", "noise", 2, "zero"),
                          ("gpt2", "noise", 2, "mean"), ("ioi", "noise", 2, "patch")])  # fmt: skip
def test_eap_equals_autograd_through_the_hooked_model(
    tmp_path: Path, gpt2_dir: Path, which: str, direction: str, steps: int, ablation: str
) -> None:
    model = _model(which, tmp_path, gpt2_dir)
    over = [*model, "grid=edges", "intervention=eap", f"intervention.direction={direction}",
            f"intervention.steps={steps}", f"intervention.ablation={ablation}",
            "runner.progress=false", "store.plots=false"]  # fmt: skip
    ds = sweep.open_results(sweep.run([*over, f"store.path={tmp_path / 's.zarr'}"])).load()
    got = _scores(ds)
    w = worker([*model, "grid.components=[resid_pre]", "runner.engine=fast"])
    receivers = {n.name: n for n in w_nodes(w, "receiver")}
    senders = {n.name: n for n in w_nodes(w, "sender")}
    pairs = [(i, j) for i in range(got.shape[0]) for j in range(got.shape[1])
             if np.isfinite(got[i, j]).all()]  # fmt: skip
    edges = [(senders[str(ds["sender"].values[j])], receivers[str(ds["receiver"].values[i])])
             for i, j in pairs]  # fmt: skip
    base_run = "corrupted" if direction == "denoise" else "clean"
    want = eap_logit_diffs(w.model, w.task, edges, base_run, steps, ablation)
    have = np.stack([got[i, j] for i, j in pairs])
    np.testing.assert_allclose(have, want, atol=1e-4 * max(1.0, np.abs(want).max()))
    assert len({r.kind for _, r in edges}) == 5 and np.abs(want).max() > 1e-2


def w_nodes(w, role: str) -> list:
    from sweep.edges.graph import GraphShape, receivers, senders

    cfg = w.model.cfg
    shape = GraphShape(int(cfg.n_layers), int(cfg.n_heads), mlp=not cfg.attn_only)
    return senders(shape) if role == "sender" else receivers(shape)


@pytest.mark.parametrize("ablation", ["patch", "mean"])
def test_eap_of_some_senders_equals_those_senders_of_every_edge(
    tmp_path: Path, ablation: str
) -> None:
    """EAP-IG moves the input toward the source's even when the embedding is not a chosen
    sender: scores of grid.senders=[a0.*] equal those senders' scores in a full sweep."""
    base = ["grid=edges", "intervention=eap", "intervention.steps=2",
            f"intervention.ablation={ablation}", "intervention.direction=noise",
            "runner.progress=false", "store.plots=false"]  # fmt: skip
    full = xr.open_zarr(sweep.run([*base, f"store.path={tmp_path / 'a.zarr'}"])).load()
    some = xr.open_zarr(sweep.run([*base, "grid.senders=[a0.*]",
                                   f"store.path={tmp_path / 'b.zarr'}"])).load()  # fmt: skip
    senders = list(some["sender"].values)
    np.testing.assert_allclose(some["edges"].values, full["edges"].sel(sender=senders).values,
                               atol=1e-5)  # fmt: skip


def test_one_step_of_eap_ig_is_eap_and_more_steps_differ(tmp_path: Path) -> None:
    """On the shipped induction model: steps=1 stores EAP's values; 5 steps move them."""
    base = ["grid=edges", "intervention=eap", "runner.progress=false", "store.plots=false"]
    one = sweep.run([*base, f"store.path={tmp_path / 'a.zarr'}"])
    again = sweep.run([*base, "intervention.steps=1", f"store.path={tmp_path / 'b.zarr'}"])
    five = sweep.run([*base, "intervention.steps=5", f"store.path={tmp_path / 'c.zarr'}"])
    a, b, c = (xr.open_zarr(p).load()["edges"].values for p in (one, again, five))
    np.testing.assert_array_equal(a, b)
    assert np.nanmax(np.abs(a - c)) > 1e-3


@pytest.mark.parametrize("ablation", ["patch", "mean"])
def test_verify_top_k_patches_the_top_edges_exactly(tmp_path: Path, ablation: str) -> None:
    """The K edges EAP ranks highest, patched by the exact edge forward into edges_exact:
    equal to an exact edge sweep's values for those edges (under the same ablation), and
    said beside the estimates."""
    base = ["grid=edges", "runner.progress=false", "store.plots=false"]
    iv = [] if ablation == "patch" else [f"intervention={ablation}"]
    exact = xr.open_zarr(sweep.run([*base, *iv, f"store.path={tmp_path / 'x.zarr'}"])).load()
    done = python_m(["sweep", *base, "intervention=eap", "intervention.verify_top_k=6",
                     f"intervention.ablation={ablation}", f"store.path={tmp_path / 'e.zarr'}"],
                    tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    ds = sweep.open_results(tmp_path / "e.zarr").load()
    checked = analysis.verified_edges(ds)
    assert len(checked) == 6
    top = analysis.top_edges(ds, 6)
    assert set(zip(checked["sender"], checked["receiver"], strict=True)) == set(
        zip(top["sender"], top["receiver"], strict=True)
    )
    for _, row in checked.iterrows():
        cell = dict(sender=row["sender"], receiver=row["receiver"])
        got, want = ds["edges_exact"].sel(**cell).values, exact["edges"].sel(**cell).values
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert ds["edges_exact"].notnull().sum() == 6 * ds.sizes["prompt"]  # the others unpatched
    assert "verified by exact edge patching (6 edges" in out
    assert "correlation of estimate and exact over these 6 edges: r = " in out
    assert "top edges by |EAP's estimated effect|" in out


@pytest.mark.parametrize(
    ("over", "says"),
    [
        (["grid=edges", "intervention=eap", "intervention.steps=0"],
         "intervention.steps: must be 1 (EAP) or more (EAP-IG), got 0"),
        (["intervention=eap"],
         "intervention=eap: scores the edges of an edge sweep; add grid=edges"),
        (["grid=paths", "grid.receivers=[logits]", "intervention=eap"],
         "intervention=eap: grid=paths patches"),
        (["grid=edges", "intervention=eap", "intervention.ablation=mean",
          "intervention.direction=denoise"],
         "intervention.direction: denoise with intervention.ablation=mean"),
        (["grid=edges", "intervention=eap", "intervention.ablation=resample"],
         "intervention.ablation: 'resample' is not one of patch, zero, mean"),
    ],
)  # fmt: skip
def test_bad_eap_settings_are_one_line(tmp_path: Path, over: list[str], says: str) -> None:
    out = python_m(["sweep", *over, f"store.path={tmp_path / 's'}"], tmp_path,
                   {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    lines = [x for x in out.stderr.splitlines() if x.startswith("patchsweep: error:")]
    assert out.returncode == 2 and len(lines) == 1 and says in lines[0], out.stderr[-2000:]
    assert not (tmp_path / "s").exists()
