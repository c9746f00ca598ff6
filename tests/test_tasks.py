"""IOI generation and task tokenization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep import ioi
from sweep.models import load_model
from sweep.spec import SweepSpec
from sweep.tasks import load_examples, tokenize


@pytest.fixture(scope="module")
def native():
    return load_model(SweepSpec.from_config(sweep.compose_config(["model=native"])).model)


def test_ioi_is_seeded_and_well_formed(native) -> None:
    spec = SweepSpec.from_config(
        sweep.compose_config(["task=ioi", "task.n_prompts=20", "task.seed=3"])
    ).task
    a, b = load_examples(spec, native), load_examples(spec, native)
    assert a == b and len(a) == 20
    other = load_examples(
        SweepSpec.from_config(
            sweep.compose_config(["task=ioi", "task.n_prompts=20", "task.seed=4"])
        ).task,
        native,
    )
    assert [e.clean for e in other] != [e.clean for e in a]
    for ex in a:
        assert ex.answer != ex.wrong
        assert ex.answer in ex.clean and ex.wrong in ex.clean
        # ABC corruption: none of the clean names appear in the corrupted prompt.
        assert ex.answer not in ex.corrupted and ex.wrong not in ex.corrupted
        assert ex.clean.count(ex.wrong.strip()) == 2  # the subject is named twice
    task = tokenize(a, native)
    assert task.clean.shape == task.corrupted.shape
    # Clean and corrupted differ only where the names are.
    for i in range(task.n_prompts):
        n = int(task.lengths[i])
        assert int((task.clean[i, :n] != task.corrupted[i, :n]).sum()) == 3


def test_ioi_leaves_out_multi_token_names() -> None:
    names = ioi.usable_names(lambda s: len(s) <= 5)  # e.g. " Mary" but not " Michael"
    assert "Mary" in names and "Michael" not in names
    made = ioi.make_ioi(30, 0, names)
    assert all(e.answer.strip() in names and e.wrong.strip() in names for e in made)
    with pytest.raises(ValueError, match="at least 5 single-token names"):
        ioi.make_ioi(3, 0, names[:4])


def test_prompts_of_different_lengths_are_right_padded(native, tmp_path: Path) -> None:
    from conftest import ioi_rows, write_task

    rows = ioi_rows(2)
    rows[1]["clean"] = "Then, " + rows[1]["clean"]
    rows[1]["corrupted"] = "Then, " + rows[1]["corrupted"]
    task = write_task(tmp_path / "t.jsonl", rows)
    path = sweep.run(
        [
            "model=native",
            "task=prompts",
            f"task.path={task}",
            "grid.components=[resid_pre,z]",
            f"store.path={tmp_path / 's.zarr'}",
            "runner.progress=false",
        ]
    )
    ds = sweep.open_results(path)
    short, long = (int(n) for n in ds["prompt_length"].values)
    assert short == 15 and long > short and ds.sizes["pos"] == long
    assert ds["clean_token"].sel(prompt=0, pos=long - 1).item() == ""
    r = ds["resid_pre"].sel(metric="logit_diff")
    # Padding positions of the short prompt are not cells; everything else is computed.
    assert r.sel(prompt=0, pos=slice(15, None)).isnull().all()
    assert r.sel(prompt=0, pos=slice(0, 14)).notnull().all() and r.sel(prompt=1).notnull().all()
    # Each prompt's result equals the same prompt swept alone (padding changes nothing).
    alone = write_task(tmp_path / "alone.jsonl", rows[:1])
    p2 = sweep.run(
        [
            "model=native",
            "task=prompts",
            f"task.path={alone}",
            "grid.components=[resid_pre,z]",
            f"store.path={tmp_path / 'alone.zarr'}",
            "runner.progress=false",
        ]
    )
    ds2 = sweep.open_results(p2)
    np.testing.assert_allclose(
        ds2["resid_pre"].values[0, ..., 0], r.sel(prompt=0, pos=slice(0, 14)).values, atol=1e-5
    )
    np.testing.assert_allclose(ds2["z"].values[..., 0], ds["z"].values[..., 0], atol=1e-5)
