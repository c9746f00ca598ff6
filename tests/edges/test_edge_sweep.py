"""``grid=edges`` end to end: the store equals one hooked forward per edge, reads by
name, counts edges, runs on Ray, and resumes after a kill equal to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import sweep
from sweep.analysis import top_edges
from sweep.edges.graph import GraphShape, connects, receivers, senders
from sweep.store.status import done_marks
from tests.edge_reference import ablated_edge_logit_diffs, edge_logit_diffs
from tests.helpers import ioi_rows, kill_part_way, mixed_rows, native_prompts, worker, write_task

CHOSEN = ["grid=edges", "grid.receivers=[a1.*.k,a1.h0.q,m0,m1,logits]",
          "grid.senders=[embed,a0.*,m0,a1.h1]"]  # fmt: skip


def edge_sweep(tmp_path: Path, *extra: str) -> list[str]:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    return [*native_prompts(task, 2), *CHOSEN, "store.chunk_kb=1", "store.prompt_block=2",
            "runner.progress=false", *extra]  # fmt: skip


def stored_edges(ds: xr.Dataset, shape: GraphShape) -> list:
    """The store's (sender, receiver) pairs that are edges of the graph, as nodes."""
    by_name = {n.name: n for n in receivers(shape) + senders(shape)}
    return [
        (by_name[s], by_name[r]) for r in map(str, ds["receiver"].values)
        for s in map(str, ds["sender"].values) if connects(by_name[s], by_name[r], shape)
    ]  # fmt: skip


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_edge_store_equals_one_hooked_forward_per_edge(tmp_path: Path, direction: str) -> None:
    over = edge_sweep(tmp_path, f"intervention.direction={direction}")
    path = sweep.run([*over, f"store.path={tmp_path / 'e.zarr'}"])
    ds = xr.open_zarr(path).load()
    assert ds["edges"].dims == ("metric", "receiver", "sender", "prompt")
    names = {d: [str(x) for x in ds[d].values] for d in ("receiver", "sender")}
    assert names["receiver"] == ["m0", "a1.h0.q", "a1.h0.k", "a1.h1.k", "a1.h2.k", "a1.h3.k",
                                 "m1", "logits"]  # block order  # fmt: skip
    assert names["sender"] == ["embed", "a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0", "a1.h1"]
    assert list(ds["receiver_layer"].values) == [0, 1, 1, 1, 1, 1, 1, 2]
    assert list(ds["sender_layer"].values) == [-1, 0, 0, 0, 0, 0, 1]

    # The reference: the same model and prompts, one hooked forward per edge and prompt.
    w = worker([*over[:4], "grid.components=[resid_pre]"])
    shape = GraphShape(2, 4)
    by_name = {n.name: n for n in receivers(shape) + senders(shape)}
    pairs = [(by_name[s], by_name[r]) for r in names["receiver"] for s in names["sender"]]
    real = [(s, r) for s, r in pairs if connects(s, r, shape)]
    base = "corrupted" if direction == "denoise" else "clean"
    want = edge_logit_diffs(w.model, w.task, real, base)
    got = ds["edges"].sel(metric="logit_diff")
    for j, (s, r) in enumerate(real):
        np.testing.assert_allclose(got.sel(receiver=r.name, sender=s.name).values, want[j],
                                   atol=1e-4, err_msg=f"{s.name} -> {r.name}")  # fmt: skip
    # Pairs that are not edges (a receiver before its sender) hold no value.
    missing = {(s.name, r.name) for s, r in pairs if not connects(s, r, shape)}
    assert ("a1.h1", "a1.h0.q") in missing and ("m0", "m0") in missing
    for s, r in missing:
        assert got.sel(receiver=r, sender=s).isnull().all()
    assert np.abs(want - want.mean(0)).max() > 1e-2  # edges differ: not a constant

    # The top-edges table: the largest |mean effect| over prompts, by name.
    effect = (got - ds[f"{base}_baseline"].sel(metric="logit_diff")).mean("prompt")
    flat = effect.stack(edge=("receiver", "sender")).dropna("edge")
    best = flat.isel(edge=int(np.abs(flat).argmax()))
    top = top_edges(ds, k=3)
    assert (top.loc[0, "receiver"], top.loc[0, "sender"]) == (best.receiver.item(),
                                                              best.sender.item())  # fmt: skip
    assert top.loc[0, "effect"] == pytest.approx(float(best), abs=1e-5)
    assert list(top["n"]) == [3, 3, 3]

    status = sweep.status(str(path))
    assert status.what == "edges" and status.cell_prompts == (3 * len(real), 3 * len(real))


def test_edges_one_position_at_a_time_equal_the_reference(tmp_path: Path) -> None:
    """``grid.positions``: the receiver reads the sender's change at one token only; a
    position past a prompt's end is NaN for it (the prompts have three lengths)."""
    over = edge_sweep(tmp_path, "grid.positions=[1,20,-1]")
    ds = sweep.open_results(sweep.run([*over, f"store.path={tmp_path / 'p.zarr'}"])).load()
    assert ds["edges"].dims == ("metric", "receiver", "sender", "pos", "prompt")
    w = worker([*over[:4], "grid.components=[resid_pre]"])
    real = stored_edges(ds, GraphShape(2, 4))
    got = ds["edges"].sel(metric="logit_diff")
    for pos in (1, 20, -1):
        want = edge_logit_diffs(w.model, w.task, real, "corrupted", position=pos)
        values = np.stack([got.sel(receiver=r.name, sender=s.name, pos=pos).values
                           for s, r in real])  # fmt: skip
        np.testing.assert_allclose(values, want, atol=1e-4, err_msg=f"pos {pos}")
    lengths = ds["prompt_length"].values
    assert (lengths <= 20).sum() == 2 and np.isnan(got.sel(pos=20).values[..., lengths <= 20]).all()
    top = top_edges(ds, 3)
    assert list(top.columns[:3]) == ["sender", "receiver", "pos"]


@pytest.mark.parametrize("kind", ["zero", "mean", "resample"])
def test_ablated_edges_equal_the_reference(tmp_path: Path, kind: str) -> None:
    """An edge's source ablated: the receiver reads the clean run with the sender's output
    replaced by zero, its task mean or other prompts' (prompts of one length)."""
    from sweep.interventions.resample import donors

    task = write_task(tmp_path / "t.jsonl", ioi_rows(4))
    over = [*native_prompts(task, 2), "grid=edges", "grid.receivers=[a1.h0.*,m1,logits]",
            "grid.senders=[embed,a0.h1,a0.h2,m0]", f"intervention={kind}",
            "runner.progress=false"]  # fmt: skip
    if kind == "resample":
        over.append("intervention.samples=2")
    ds = sweep.open_results(sweep.run([*over, f"store.path={tmp_path / 'a.zarr'}"])).load()
    assert ds.attrs["base_run"] == "clean"
    w = worker([*over[:4], "grid.components=[resid_pre]"])
    real = stored_edges(ds, GraphShape(2, 4))
    picks = donors(torch.from_numpy(w.task.lengths), 2, 0) if kind == "resample" else None
    want = ablated_edge_logit_diffs(w.model, w.task, real, kind, picks)
    got = ds["edges"].sel(metric="logit_diff")
    values = np.stack([got.sel(receiver=r.name, sender=s.name).values for s, r in real])
    np.testing.assert_allclose(values, want, atol=1e-4)
    clean = ds["clean_baseline"].sel(metric="logit_diff").values
    assert np.abs(want - clean).max() > 1e-2  # the ablations change something


def test_edge_sweep_on_ray_equals_in_process(ray_session, tmp_path: Path) -> None:
    over = edge_sweep(tmp_path)
    local = sweep.run([*over, f"store.path={tmp_path / 'local.zarr'}"])
    ray = sweep.run([*over, "runner=ray", f"runner.address={ray_session}",
                     f"store.path={tmp_path / 'ray.zarr'}"])  # fmt: skip
    a, b = (xr.open_zarr(p).load() for p in (local, ray))
    assert int(a["edges"].notnull().sum()) > 0
    np.testing.assert_allclose(a["edges"].values, b["edges"].values, atol=1e-6)


@pytest.mark.slow
def test_killed_edge_sweep_resumes_equal_to_uninterrupted(tmp_path: Path) -> None:
    over = [
        "model=native", "model.native.n_layers=4", "task=ioi", "task.n_prompts=6", "grid=edges",
        "store.chunk_kb=1", "store.prompt_block=2", "runner.memory_mb=4", "runner.progress=false",
    ]  # fmt: skip
    killed = tmp_path / "killed.zarr"
    first = kill_part_way([*over, f"store.path={killed}"], tmp_path, killed, 3)
    assert 0 < (first == 1).sum() < len(first), "killed too late"

    summary = sweep.run_config(sweep.compose_config([*over, f"store.path={killed}"]))
    second = done_marks(killed)
    assert summary.edges and summary.units_run == int((first == 0).sum())
    assert np.array_equal(second[first == 1], first[first == 1])  # not computed twice
    fresh = sweep.run([*over, f"store.path={tmp_path / 'fresh.zarr'}"])
    a, b = xr.open_zarr(killed).load(), xr.open_zarr(fresh).load()
    assert int(a["edges"].notnull().sum()) == 6 * len(
        [1 for r in receivers(GraphShape(4, 4)) for s in senders(GraphShape(4, 4))
         if connects(s, r, GraphShape(4, 4))]
    )  # fmt: skip
    np.testing.assert_array_equal(a["edges"].values, b["edges"].values)  # NaN == NaN here


def test_a_damaged_edge_chunk_is_found_and_recomputed(tmp_path: Path) -> None:
    """``sweep.status --verify`` names a lost edge chunk by its receivers; the same command
    then recomputes exactly that unit, to the same values."""
    over = ["grid=edges", "runner.progress=false", "store.chunk_kb=1",
            f"store.path={tmp_path / 'e.zarr'}"]  # fmt: skip
    path = sweep.run(over)
    before = xr.open_zarr(path).load()
    chunks = sorted((Path(path) / "edges" / "c").rglob("*"))
    victim = [c for c in chunks if c.is_file()][1]
    victim.write_bytes(b"not a chunk")
    report = sweep.status(str(path), verify=True)
    assert len(report.damaged) == 1 and report.damaged[0].startswith("edges receivers ")
    summary = sweep.run_config(sweep.compose_config(over))
    assert summary.units_run == 1
    after = xr.open_zarr(path).load()
    np.testing.assert_array_equal(after["edges"].values, before["edges"].values)
