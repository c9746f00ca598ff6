"""Noising, ablations and metrics, each against an independent TransformerLens computation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ioi_rows, native_prompts, set_cell, worker, write_task
from tl_reference import TL_FUNCTIONS

import sweep
from sweep.components import COMPONENTS, Component, get_component
from sweep.engine.cells import position_mean
from sweep.engine.worker import Worker
from sweep.errors import ConfigError, TaskError
from sweep.interventions.resample import donors
from tests.helpers import padded

CHECKED = ["resid_pre", "attn_out", "mlp_out", "z", "z_by_pos", "v_by_pos", "pattern"]
"""One component of every activation layout and patch kind (all 14 are checked for
patching in test_patching_vs_transformerlens.py; the engine code path is shared)."""


def _overrides(tmp: Path, name: str, *extra: str) -> list[str]:
    task = write_task(tmp / "task.jsonl", ioi_rows(4))
    return [
        *native_prompts(task),
        f"store.path={tmp / name}",
        "runner.progress=false",
        "runner.memory_mb=1",
        *extra,
    ]


def _worker(overrides: list[str]) -> Worker:
    return worker(overrides)


def test_noising_equals_transformerlens_with_roles_swapped(tmp_path: Path) -> None:
    over = _overrides(
        tmp_path,
        "noise",
        f"grid.components=[{','.join(COMPONENTS)}]",
        "intervention.direction=noise",
    )
    ds = sweep.open_results(sweep.run(over))
    assert ds.attrs["base_run"] == "clean"
    w = _worker(over)
    t = w.task
    rows = torch.arange(t.n_prompts)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[rows, -1, t.answer] - logits[rows, -1, t.wrong]

    clean_ids, corrupted_ids = padded(t)
    _, corrupted_cache = w.model.run_with_cache(corrupted_ids)
    for name, fn in TL_FUNCTIONS.items():
        with torch.no_grad():
            ref = fn(w.model, clean_ids, corrupted_cache, metric, reduce="none").values.numpy()
        got = ds[name].sel(metric="logit_diff").values
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=name)
    # Noising moves the clean run towards the corrupted one somewhere.
    clean = ds["clean_baseline"].sel(metric="logit_diff").values
    assert np.abs(ds["resid_pre"].sel(metric="logit_diff").values - clean).max() > 1e-2


def _hand_ablation(w: Worker, name: str, value_of: Any) -> np.ndarray:
    """[layer, (pos), (head), prompt] by one hooked forward of the clean run per cell;
    ``value_of(layer, clean activation)`` gives what the cell is set to."""
    c = get_component(name)
    t = w.task
    rows = torch.arange(t.n_prompts)
    clean_ids = padded(t)[0]
    _, cache = w.model.run_with_cache(clean_ids)
    out = []
    for layer in range(w.shape.n_layers):
        value = value_of(layer, cache[c.hook_name(layer)])
        for pos in range(t.seq_len) if c.has("pos") else [-1]:
            for head in range(w.shape.n_heads) if c.has("head") else [-1]:
                hook = (c.hook_name(layer), set_cell(c, value, pos, head))
                logits = w.model.run_with_hooks(clean_ids, fwd_hooks=[hook])[:, -1]
                out.append((logits[rows, t.answer] - logits[rows, t.wrong]).numpy())
    grid = [t.seq_len] if c.has("pos") else []
    grid += [w.shape.n_heads] if c.has("head") else []
    return np.array(out).reshape(w.shape.n_layers, *grid, t.n_prompts)


def _zero(layer: int, act: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(act)


def _mean_over_prompts(layer: int, act: torch.Tensor) -> torch.Tensor:
    return act.mean(0, keepdim=True).expand_as(act)


@pytest.mark.parametrize(("kind", "value_of"), [("zero", _zero), ("mean", _mean_over_prompts)])
def test_zero_and_mean_ablation_equal_a_hand_written_hook(
    tmp_path: Path, kind: str, value_of: Any
) -> None:
    comps = f"grid.components=[{','.join(CHECKED)}]"
    over = _overrides(tmp_path, kind, comps, f"intervention={kind}")
    ds = sweep.open_results(sweep.run(over))
    assert ds.attrs["base_run"] == "clean" and ds.attrs["intervention"] == kind
    w = _worker(over)
    clean = ds["clean_baseline"].sel(metric="logit_diff").values
    for name in CHECKED:
        with torch.no_grad():
            ref = _hand_ablation(w, name, value_of)
        got = ds[name].sel(metric="logit_diff").values
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=name)
        assert np.abs(got - clean).max() > 1e-3, f"{kind} ablation of {name} changed nothing"


def test_mean_ablation_over_a_reference_file(tmp_path: Path) -> None:
    """The mean comes from the reference prompts' own run, not from the task's prompts."""
    ref_rows = [{"prompt": r["corrupted"]} for r in ioi_rows(7)[2:]]
    reference = write_task(tmp_path / "reference.jsonl", ref_rows)
    comps = "grid.components=[resid_pre,z]"
    over = _overrides(
        tmp_path, "ref", comps, "intervention=mean", f"intervention.reference={reference}"
    )
    ds = sweep.open_results(sweep.run(over))
    w = _worker(over)
    _, ref_cache = w.model.run_with_cache(w.model.to_tokens([r["prompt"] for r in ref_rows]))
    for name in ("resid_pre", "z"):
        c = get_component(name)

        def reference_mean(layer: int, act: torch.Tensor, c: Component = c) -> torch.Tensor:
            return ref_cache[c.hook_name(layer)].mean(0, keepdim=True).expand_as(act)

        with torch.no_grad():
            ref = _hand_ablation(w, name, reference_mean)
        got = ds[name].sel(metric="logit_diff").values
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=name)
    own = _overrides(tmp_path, "own", comps, "intervention=mean")
    own_ds = sweep.open_results(sweep.run(own))
    assert np.abs(own_ds["resid_pre"].values - ds["resid_pre"].values).max() > 1e-3


def test_mean_reference_with_another_length_is_refused(tmp_path: Path) -> None:
    reference = write_task(tmp_path / "reference.jsonl", [{"prompt": "When Mary and John"}])
    over = _overrides(tmp_path, "bad", "intervention=mean", f"intervention.reference={reference}")
    with pytest.raises(TaskError, match=r"reference\.jsonl:1: reference prompt is \d+ tokens"):
        sweep.run(over)
    assert not (tmp_path / "bad").exists()


def test_resample_is_reproducible_by_seed(tmp_path: Path) -> None:
    def run(seed: int, name: str) -> np.ndarray:
        over = _overrides(
            tmp_path, name, "grid.components=[resid_pre,z]", "intervention=resample",
            "intervention.samples=2", f"intervention.seed={seed}",
        )  # fmt: skip
        ds = sweep.open_results(sweep.run(over))
        return np.concatenate([ds[v].values.ravel() for v in ("resid_pre", "z")])

    a, again, other = run(0, "a"), run(0, "again"), run(1, "other")
    np.testing.assert_array_equal(a, again)
    assert np.abs(a - other).max() > 1e-3


def test_resample_takes_another_prompt_of_the_same_length() -> None:
    lengths = torch.tensor([5, 5, 7, 7, 7, 5])
    d = donors(lengths, samples=50, seed=3)
    assert (d != torch.arange(6)).all()
    assert (lengths[d] == lengths).all()
    assert len(set(d[:, 2].tolist())) == 2  # both other length-7 prompts get drawn
    with pytest.raises(TaskError, match="prompt 2 \\(7 tokens\\) has no other prompt"):
        donors(torch.tensor([5, 5, 7]), samples=1, seed=0)


def test_position_mean_skips_prompts_that_end_earlier() -> None:
    act = torch.arange(12.0).reshape(3, 4, 1)  # [prompt, pos, d]
    lengths = torch.tensor([4, 2, 3])
    got = position_mean(get_component("resid_pre"), act, lengths)[0, :, 0]
    want = [(0 + 4 + 8) / 3, (1 + 5 + 9) / 3, (2 + 10) / 2, 3.0]
    assert got.tolist() == pytest.approx(want)


METRIC_NAMES = ["logit_diff", "prob", "logprob", "loss", "kl"]


def test_every_metric_equals_a_direct_computation_from_the_logits(tmp_path: Path) -> None:
    over = _overrides(
        tmp_path, "metrics", "grid.components=[resid_pre]",
        f"metric.names=[{','.join(METRIC_NAMES)}]",
    )  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    assert list(ds["metric"].values) == METRIC_NAMES
    w = _worker(over)
    t = w.task
    rows = torch.arange(t.n_prompts)
    clean_ids, corrupted_ids = padded(t)
    with torch.no_grad():
        clean_logits, cache = w.model.run_with_cache(clean_ids)
        clean = clean_logits[:, -1]
        c = get_component("resid_pre")
        for layer, pos in [(0, 3), (1, t.seq_len - 1), (2, 5)]:
            hook = (c.hook_name(layer), set_cell(c, cache[c.hook_name(layer)], pos, -1))
            logits = w.model.run_with_hooks(corrupted_ids, fwd_hooks=[hook])[:, -1]
            want = {
                "logit_diff": logits[rows, t.answer] - logits[rows, t.wrong],
                "prob": F.softmax(logits, -1)[rows, t.answer],
                "logprob": F.log_softmax(logits, -1)[rows, t.answer],
                "loss": F.cross_entropy(logits, t.answer, reduction="none"),
                "kl": F.kl_div(
                    F.log_softmax(logits, -1), F.log_softmax(clean, -1),
                    log_target=True, reduction="none",
                ).sum(-1),
            }  # fmt: skip
            for m, v in want.items():
                got = ds["resid_pre"].sel(metric=m, layer=layer, pos=pos).values
                np.testing.assert_allclose(got, v.numpy(), atol=1e-5, rtol=1e-4, err_msg=m)
    kl_clean = ds["clean_baseline"].sel(metric="kl").values
    np.testing.assert_allclose(kl_clean, 0, atol=1e-6)
    assert (ds["corrupted_baseline"].sel(metric="kl").values > 1e-4).all()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("metric.names=[accuracy]", r"metric.names: unknown metric 'accuracy'; choose from: "),
        ("intervention.kind=scramble", r"intervention.kind: 'scramble' is not one of"),
        ("intervention.samples=0", r"intervention.samples: must be a positive integer"),
        ("intervention.verify_top_k=-1", r"intervention.verify_top_k: must be 0 or more"),
    ],
)
def test_bad_intervention_or_metric_is_named(tmp_path: Path, override: str, message: str) -> None:
    kind = {"samples": "resample", "verify": "atp"}
    extra = [f"intervention={v}" for k, v in kind.items() if k in override]
    with pytest.raises(ConfigError, match=message):
        sweep.run(_overrides(tmp_path, "x", *extra, override))


def test_unknown_intervention_group_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^intervention=scramble: no such option; choose from: "
                       r"atp, eap, mean, patch, resample, zero$"):  # fmt: skip
        sweep.run(_overrides(tmp_path, "x", "intervention=scramble"))


def test_kl_attribution_at_the_clean_run_is_refused(tmp_path: Path) -> None:
    over = _overrides(
        tmp_path, "x", "intervention=atp", "intervention.direction=noise", "metric.names=[kl]"
    )
    with pytest.raises(ConfigError, match=r"metric.names: kl .* direction=noise"):
        sweep.run(over)
