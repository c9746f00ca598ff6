"""Answer sets (``"answer": [" 51", " 52"]``): each metric against a reference written
per prompt with Python loops, a sweep against TransformerLens' patching with that
reference as its metric, AtP through the set metric's gradient, and bad sets refused in
one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NAMES, ioi_rows, native_prompts, padded, user_module, worker, write_task
from tl_reference import TL_FUNCTIONS

import sweep
from sweep.errors import TaskError
from sweep.metrics import METRICS

SET_METRICS = ("logit_diff", "logit_gap", "prob_diff", "prob", "logprob", "loss")


def reference(name: str, logits: torch.Tensor, answers: list, wrongs: list) -> torch.Tensor:
    """The metric of each row, by hand: sets as Python lists of token ids."""
    out = []
    for row, a, w in zip(logits, answers, wrongs, strict=True):
        p = row.softmax(-1)
        if name == "logit_diff":
            value = sum(row[t] for t in a) / len(a) - sum(row[t] for t in w) / len(w)
        elif name == "logit_gap":
            value = sum(row[t] for t in a) / len(a) - max(row[t] for t in w)
        elif name == "prob_diff":
            value = sum(p[t] for t in a) - sum(p[t] for t in w)
        elif name == "prob":
            value = sum(p[t] for t in a)
        else:
            value = torch.log(sum(p[t] for t in a)) * (1 if name == "logprob" else -1)
        out.append(value)
    return torch.stack(out)


def _padded(sets: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in sets)
    return torch.tensor([s + [-1] * (width - len(s)) for s in sets])


def test_each_metric_over_sets_equals_the_hand_reference() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 30, dtype=torch.float64) * 3
    answers = [[3], [1, 7], [2, 4, 9], [5, 6]]
    wrongs = [[0, 8, 11], [2], [10, 12], [13, 14, 15]]
    for name in SET_METRICS:
        got = METRICS[name](logits, _padded(answers), _padded(wrongs), logits)
        want = reference(name, logits, answers, wrongs)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=name)


def test_a_set_of_one_is_the_single_token_metric() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 20)
    answer, wrong = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    for name in (*SET_METRICS, "kl"):
        single = METRICS[name](logits, answer, wrong, logits)
        as_sets = METRICS[name](logits, answer[:, None], wrong[:, None], logits)
        torch.testing.assert_close(as_sets, single, rtol=0, atol=1e-6, msg=name)


def set_rows(n: int = 4) -> list[dict]:
    """IOI rows whose answer is a set of two names (the first row: one name) and whose
    wrong set is three names."""
    rows = ioi_rows(n)
    for i, row in enumerate(rows):
        more = [" " + NAMES[(i + k) % len(NAMES)] for k in (5, 6, 7, 8)]
        row["answer"] = row["answer"] if i == 0 else [row["answer"], more[0]]
        row["wrong"] = [row["wrong"], more[1], more[2]]
    return rows


def _over(tmp: Path, *extra: str) -> list[str]:
    task = write_task(tmp / "task.jsonl", set_rows())
    return [*native_prompts(task), "runner.progress=false", "store.plots=false",
            f"store.path={tmp / 's.zarr'}",
            f"metric.names=[{','.join(SET_METRICS)}]", *extra]  # fmt: skip


def test_a_sweep_over_sets_equals_transformerlens_patching(tmp_path: Path) -> None:
    over = _over(tmp_path, "grid.components=[resid_pre,z]")
    ds = sweep.open_results(sweep.run(over))
    w = worker(over)
    t = w.task
    model = w.model
    rows = set_rows()
    tokens = [[[model.to_single_token(x) for x in ([r[k]] if isinstance(r[k], str) else r[k])]
               for r in rows] for k in ("answer", "wrong")]  # fmt: skip
    answers, wrongs = tokens
    assert ds["answer_id"].dims == ("prompt", "answer_set")
    np.testing.assert_array_equal(ds["answer_id"].values, _padded(answers).numpy())
    np.testing.assert_array_equal(ds["wrong_id"].values, _padded(wrongs).numpy())
    assert json.loads(str(ds["answer"].values[1])) == rows[1]["answer"]
    assert str(ds["answer"].values[0]) == rows[0]["answer"]

    clean_ids, corrupted_ids = padded(t)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_ids)
        clean_logits = model(clean_ids)[:, -1].double()
    for name in SET_METRICS:
        base = reference(name, clean_logits, answers, wrongs)
        np.testing.assert_allclose(ds["clean_baseline"].sel(metric=name).values,
                                   base.numpy(), rtol=1e-4, atol=1e-5)  # fmt: skip

        def metric(logits: torch.Tensor, name: str = name) -> torch.Tensor:
            return reference(name, logits[:, -1], answers, wrongs)

        for component in ("resid_pre", "z"):
            with torch.no_grad():
                ref = TL_FUNCTIONS[component](model, corrupted_ids, clean_cache, metric,
                                              reduce="none").values.numpy()  # fmt: skip
            got = ds[component].sel(metric=name).values
            np.testing.assert_allclose(
                got, ref, atol=2e-4, rtol=1e-4, err_msg=f"{name} {component}"
            )
    assert np.nanmax(np.abs(ds["z"].sel(metric="prob_diff").values)) > 1e-5


HAND = '''
import torch


def hand_prob_diff(logits, answer, wrong, clean):
    """prob_diff over sets, written as a loop over rows and members."""
    p = logits.softmax(-1)
    rows = []
    for i in range(logits.shape[0]):
        a = sum(p[i, t] for t in answer[i].tolist() if t >= 0)
        w = sum(p[i, t] for t in wrong[i].tolist() if t >= 0)
        rows.append(a - w)
    return torch.stack(rows)
'''


def test_atp_over_sets_follows_the_set_metrics_gradient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AtP of the built-in prob_diff over sets equals AtP of a hand-written one."""
    user_module(tmp_path, monkeypatch, "hand_metrics", HAND)
    over = [o for o in _over(tmp_path, "grid.components=[resid_pre,z_by_pos]", "intervention=atp",
                             "metric.custom=[hand_metrics:hand_prob_diff]")
            if not o.startswith("metric.names")] + ["metric.names=[prob_diff]"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    for name in ("resid_pre", "z_by_pos"):
        mine = ds[name].sel(metric="prob_diff").values
        hand = ds[name].sel(metric="hand_prob_diff").values
        np.testing.assert_allclose(mine, hand, atol=1e-7, rtol=1e-5, err_msg=name)
        assert np.nanmax(np.abs(mine)) > 1e-6


@pytest.mark.parametrize(
    ("answer", "wrong", "says"),
    [
        ([], " John", "missing or empty"),
        ([" Mary", 3], " John", "answer must be a token's text or a list of them"),
        ([" Mary", " Mary"], " John", "answer lists ' Mary' twice"),
        ([" Mary", " Amy"], [" John", " Amy"], "' Amy' is in both the answer and the wrong set"),
        ([" Mary", " Maryland"], " John", "answer set member ' Maryland' is 3 tokens"),
    ],
)
def test_a_bad_answer_set_is_one_line(tmp_path: Path, answer, wrong, says: str) -> None:
    row = {**ioi_rows(1)[0], "answer": answer, "wrong": wrong}
    task = write_task(tmp_path / "task.jsonl", [row])
    over = [*native_prompts(task), f"store.path={tmp_path / 's.zarr'}"]
    with pytest.raises(TaskError) as e:
        sweep.run(over)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"{task}:1: ")
    assert not (tmp_path / "s.zarr").exists()


def test_single_token_tasks_keep_one_id_per_prompt(tmp_path: Path) -> None:
    task = write_task(tmp_path / "task.jsonl", ioi_rows(2))
    over = [*native_prompts(task), "runner.progress=false", "store.plots=false",
            f"store.path={tmp_path / 's.zarr'}", "grid.components=[resid_pre]"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    assert ds["answer_id"].dims == ("prompt",) and "answer_set" not in ds.dims
    assert math.isfinite(float(ds["clean_baseline"].sel(metric="logit_diff")[0]))
