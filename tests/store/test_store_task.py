"""The store carries its task: each prompt's texts, answer and wrong tokens (strings and
ids) and where it came from, and every intervention key, so per-prompt work needs no
task file."""

from __future__ import annotations

from pathlib import Path

import sweep
from tests.helpers import ioi_rows, native_prompts, worker, write_task
from tests.zygote import python_m


def test_the_store_round_trips_the_task_file(tmp_path: Path) -> None:
    rows = ioi_rows(5)
    rows[3]["clean"] = rows[3]["clean"].replace("store", "café")  # a non-ASCII letter
    rows[3]["corrupted"] = rows[3]["corrupted"].replace("store", "café")
    task = write_task(tmp_path / "t.jsonl", rows)
    over = [*native_prompts(task, 2), "grid.components=[resid_pre]", "store.prompt_block=2",
            "intervention.direction=noise", "runner.progress=false",
            f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))

    assert list(ds["clean_text"].values) == [r["clean"] for r in rows]
    assert list(ds["corrupted_text"].values) == [r["corrupted"] for r in rows]
    assert list(ds["answer"].values) == [r["answer"] for r in rows]
    assert list(ds["wrong"].values) == [r["wrong"] for r in rows]
    assert list(ds["source"].values) == [f"{task}:{i + 1}" for i in range(len(rows))]
    model = worker(over).model  # the same tokenizer, built again
    for name, field in (("answer_id", "answer"), ("wrong_id", "wrong")):
        want = [int(model.to_tokens(r[field], prepend_bos=False)[0, 0]) for r in rows]
        assert list(ds[name].values) == want, name
    # Coordinates along prompt: they travel with a selection.
    one = ds["resid_pre"].sel(prompt=3)
    assert "café" in str(one["clean_text"].values)

    assert ds.attrs["intervention"] == "patch"
    assert ds.attrs["intervention_keys"] == {"kind": "patch", "direction": "noise"}
    out = python_m(["sweep.status", str(tmp_path / "s.zarr")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "intervention.kind: patch\nintervention.direction: noise\n" in out.stdout


def test_ablation_keys_are_stored_too(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t.jsonl", ioi_rows(4))
    over = [*native_prompts(task, 2), "grid.components=[resid_pre]", "intervention=resample",
            "intervention.samples=3", "intervention.seed=7", "runner.progress=false",
            f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    assert ds.attrs["intervention_keys"] == {"kind": "resample", "samples": 3, "seed": 7}
