"""Metrics of a user's own (``metric.custom=module:function``): patched values against
TransformerLens' patching functions with the same function as their metric, AtP and EAP
through its gradient, and bad functions refused in one line before any unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ioi_rows, native_prompts, spec_of, user_module, worker, write_task
from tl_reference import TL_FUNCTIONS

import sweep
from sweep.errors import ConfigError
from tests.helpers import padded
from tests.zygote import python_m

MODULE = '''
import torch


def top_margin(logits, answer, wrong, clean):
    """The answer's logit above the best other token's."""
    others = logits.scatter(1, answer[:, None], float("-inf"))
    return logits.gather(1, answer[:, None])[:, 0] - others.max(-1).values


def same_as_logit_diff(logits, answer, wrong, clean):
    return logits.gather(1, answer[:, None])[:, 0] - logits.gather(1, wrong[:, None])[:, 0]


def scalar(logits, answer, wrong, clean):
    return logits.sum()


def raises(logits, answer, wrong, clean):
    raise RuntimeError("no such token\\nsecond line")


def nan(logits, answer, wrong, clean):
    return logits[:, 0] * float("nan")


def logit_diff(logits, answer, wrong, clean):
    return logits[:, 0]


not_a_function = 3
'''


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the user's ``my_metrics.py``."""
    return user_module(tmp_path, monkeypatch, "my_metrics", MODULE)


def _over(tmp: Path, *extra: str) -> list[str]:
    task = write_task(tmp / "task.jsonl", ioi_rows(4))
    return [*native_prompts(task), "runner.progress=false", "store.plots=false",
            f"store.path={tmp / 's.zarr'}", *extra]  # fmt: skip


def test_a_custom_metric_equals_transformerlens_patching_with_it(here: Path) -> None:
    over = _over(here, "metric.custom=[my_metrics:top_margin]",
                 "grid.components=[resid_pre,z,z_by_pos]")  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    assert list(ds["metric"].values) == ["logit_diff", "top_margin"]
    w = worker(over)
    t = w.task
    clean_ids, corrupted_ids = padded(t)
    from my_metrics import top_margin  # type: ignore[import-not-found]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        return top_margin(last, t.answer, t.wrong, last)

    _, clean_cache = w.model.run_with_cache(clean_ids)
    for name in ("resid_pre", "z", "z_by_pos"):
        with torch.no_grad():
            ref = TL_FUNCTIONS[name](w.model, corrupted_ids, clean_cache, metric,
                                     reduce="none").values.numpy()  # fmt: skip
        got = ds[name].sel(metric="top_margin").values
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=name)
        assert not np.allclose(got, ds[name].sel(metric="logit_diff").values)


@pytest.mark.parametrize(
    "extra",
    [["grid.components=[resid_pre,z_by_pos]", "intervention=atp"],
     ["grid=edges", "intervention=eap", "'grid.receivers=[a1.*.q,logits]'"]],
    ids=["atp", "eap"],
)  # fmt: skip
def test_attribution_follows_the_custom_metrics_gradient(here: Path, extra: list[str]) -> None:
    """A custom function that computes logit_diff gives AtP's and EAP's logit_diff."""
    extra = [e.strip("'") for e in extra]
    over = _over(here, "metric.custom=[my_metrics:same_as_logit_diff]", *extra)
    ds = sweep.open_results(sweep.run(over))
    names = [n for n in ds.data_vars if "metric" in ds[n].dims and "prompt" in ds[n].dims]
    assert names
    for name in names:
        mine = ds[name].sel(metric="same_as_logit_diff").values
        theirs = ds[name].sel(metric="logit_diff").values
        np.testing.assert_allclose(mine, theirs, atol=1e-5, rtol=0, err_msg=name)
    assert np.nanmax(np.abs(theirs)) > 1e-3


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("my_metrics:scalar", "scalar gave shape (), not one value per prompt on the clean run"),
        ("my_metrics:raises", "raises raised RuntimeError: no such token on the clean run"),
        ("my_metrics:nan", "nan gave NaN or infinite values"),
        ("my_metrics:nowhere", "module 'my_metrics' has no 'nowhere'"),
        ("no_such_module:f", "cannot import 'no_such_module'"),
        ("my_metrics", "is not module:function"),
        ("my_metrics:not_a_function", "is a int, not a function"),
        ("my_metrics:logit_diff", "is named 'logit_diff' like another metric"),
    ],
)
def test_a_bad_custom_metric_is_one_line_before_any_unit(here: Path, ref: str, says: str) -> None:
    over = _over(here, f"metric.custom=[{ref}]", "grid.components=[resid_pre]")
    with pytest.raises(ConfigError) as e:
        worker(over) if ref.split(":")[-1] in ("scalar", "raises", "nan") else spec_of(over)
    assert str(e.value).startswith("metric.custom: ") and says in str(e.value)
    assert "\n" not in str(e.value)
    assert not (here / "s.zarr").exists()


def test_the_command_line_refuses_it_in_one_line(here: Path) -> None:
    done = python_m(["sweep", *_over(here, "metric.custom=[my_metrics:nan]")], here, timeout=300)
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("patchsweep: error: metric.custom: nan gave NaN")
    assert not (here / "s.zarr").exists()
