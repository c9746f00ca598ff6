"""IOI generation and task tokenization."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import ioi_rows, padded, spec_of, write_task

import sweep
from sweep.errors import TaskError
from sweep.models import load_model
from sweep.tasks import induction, ioi, load_examples
from sweep.tasks.tokenize import count_tokens, tokenize


@pytest.fixture(scope="module")
def native():
    return load_model(spec_of(["model=native"]).model)


def test_ioi_is_seeded_and_well_formed(native) -> None:
    spec = spec_of(["task=ioi", "task.n_prompts=20", "task.seed=3"]).task
    a, b = load_examples(spec, count_tokens(native)), load_examples(spec, count_tokens(native))
    assert a == b and len(a) == 20
    other = load_examples(
        spec_of(["task=ioi", "task.n_prompts=20", "task.seed=4"]).task, count_tokens(native)
    )
    assert [e.clean for e in other] != [e.clean for e in a]
    for ex in a:
        assert ex.answer != ex.wrong
        assert ex.answer in ex.clean and ex.wrong in ex.clean
        # ABC corruption: none of the clean names appear in the corrupted prompt (as words:
        # " Daniel" is inside " Danielle").
        words = set(re.findall(r"\w+", ex.corrupted))
        assert ex.answer.strip() not in words and ex.wrong.strip() not in words
        assert ex.clean.count(ex.wrong.strip()) == 2  # the subject is named twice
    task = tokenize(a, native)
    clean, corrupted = padded(task)
    assert clean.shape == corrupted.shape
    # Clean and corrupted differ only where the names are.
    for i in range(task.n_prompts):
        n = int(task.lengths[i])
        assert int((clean[i, :n] != corrupted[i, :n]).sum()) == 3


def test_ioi_leaves_out_multi_token_names() -> None:
    names = ioi.usable_names(lambda s: 1 if len(s) <= 5 else 2)  # " Mary", not " Michael"
    assert "Mary" in names and "Michael" not in names
    made = ioi.make_ioi(30, 0, names)
    assert all(e.answer.strip() in names and e.wrong.strip() in names for e in made)
    with pytest.raises(ValueError, match="at least 5 single-token names"):
        ioi.make_ioi(3, 0, names[:4])


def test_prompts_of_different_lengths_are_right_padded(native, tmp_path: Path) -> None:
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


def test_task_files_read_as_json_lines_with_a_bom_and_unicode_separators(tmp_path: Path) -> None:
    """JSON Lines ends lines at \\n only: a prompt holding U+2028 (which str.splitlines
    splits on) stays one line, and a UTF-8 byte-order mark is accepted."""
    from sweep.tasks.prompts import read_prompts

    row = {"clean": "A\u2028B", "corrupted": "C\u2028D", "answer": " x", "wrong": " y"}
    text = "\ufeff" + json.dumps(row, ensure_ascii=False) + "\n" + json.dumps(row) + "\n"
    path = tmp_path / "t.jsonl"
    path.write_text(text, encoding="utf-8")
    got = read_prompts(str(path))
    assert len(got) == 2 and got[0].clean == "A\u2028B" == got[1].clean
    assert got[0].source.endswith("t.jsonl:1") and got[1].source.endswith("t.jsonl:2")


def test_long_prompts_are_refused_not_truncated(native, tmp_path: Path) -> None:
    """TransformerLens' to_tokens truncates to n_ctx; a cut prompt gives wrong effects."""
    from sweep.errors import TaskError
    from sweep.tasks.prompts import read_prompts

    rows = ioi_rows(2)
    rows[1] = {**rows[1], "clean": " Mary" * 200, "corrupted": " John" * 200}
    task = write_task(tmp_path / "t.jsonl", rows)
    with pytest.raises(TaskError, match=r"t\.jsonl:2: prompt is 201 tokens, longer than the "
                                        r"model's context \(n_ctx 128\)"):  # fmt: skip
        tokenize(read_prompts(str(task)), native)


def test_answer_and_wrong_that_are_the_same_are_refused(tmp_path: Path) -> None:
    from sweep.errors import TaskError
    from sweep.tasks.prompts import read_prompts

    rows = ioi_rows(2)
    rows[0]["wrong"] = rows[0]["answer"]
    task = write_task(tmp_path / "t.jsonl", rows)
    with pytest.raises(TaskError, match=r"t\.jsonl:1: answer and wrong are both ' Mary'"):
        read_prompts(str(task))


@pytest.mark.parametrize("bos", [True, False])
def test_batched_tokenizing_equals_transformer_lens(native, gpt2_dir, bos: bool) -> None:
    """Prompts are tokenized a batch per tokenizer call: the same ids TransformerLens'
    to_tokens gives one prompt at a time."""
    from transformer_lens.model_bridge import TransformerBridge

    from sweep.tasks.tokenize import token_ids

    texts = [r["clean"] for r in ioi_rows(3)] + [" Mary", "x" * 30, "Then, a b c"]
    for model in (native, TransformerBridge.boot_transformers(str(gpt2_dir))):
        for text in texts:
            want = model.to_tokens(text, prepend_bos=bos, truncate=False)[0].tolist()
            assert token_ids(model, text, bos) == want, text


def test_token_strings_of_a_block(native) -> None:
    import torch

    from sweep.tasks.tokenize import token_strings

    texts = ["When Mary and John", " Mary"]
    ids = native.to_tokens(texts)  # right-padded to the longer
    want = [native.to_str_tokens(t) for t in texts]
    lengths = torch.tensor([len(w) for w in want])
    rows = token_strings(native, ids, lengths)
    assert rows[0] == want[0]
    assert rows[1] == want[1] + [""] * (len(want[0]) - len(want[1]))


@pytest.mark.parametrize("n", [2, 5, 16])
def test_every_ioi_prompt_length_occurs_twice_so_resampling_has_donors(native, n: int) -> None:
    spec = spec_of(["task=ioi", f"task.n_prompts={n}"]).task
    lengths = tokenize(load_examples(spec, count_tokens(native)), native).lengths
    assert min(np.unique(lengths, return_counts=True)[1]) >= 2, lengths


def test_resample_ablation_runs_on_ioi_at_its_defaults(tmp_path: Path) -> None:
    """It stopped with 'prompt 0 (15 tokens) has no other prompt of the same length'."""
    over = ["model=native", "task=ioi", "intervention=resample", "grid.components=[resid_pre]",
            "runner.progress=false", f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    assert ds.sizes["prompt"] == 16 and bool(ds["resid_pre"].notnull().any())


def test_the_induction_task_uses_the_letters_a_tokenizer_reads_as_one_token(native) -> None:
    """``python -m sweep model=native`` ran the induction task with letters the native
    tokenizer splits, and stopped: 'clean prompt is 20 tokens but corrupted is 19'."""
    spec = spec_of(["model=native"]).task
    count = count_tokens(native)
    assert not all(count(" " + x) == 1 for x in induction.LETTERS)  # the case that failed
    task = tokenize(load_examples(spec, count), native)  # refused before
    assert task.n_prompts == 16 and len(set(task.lengths.tolist())) == 1
    for ex in task.examples:
        assert all(count(" " + x) == 1 for x in ex.clean.split())


def test_the_induction_task_names_what_to_use_when_letters_are_too_few() -> None:
    spec = spec_of([]).task
    with pytest.raises(TaskError, match=r"reads only 2 of the letters .* use task=ioi"):
        induction.examples(spec, lambda s: 1 if s in {" A", " B"} else 2)


def test_counting_many_texts_at_once_equals_one_by_one(native) -> None:
    """IOI counts its words and templates in one tokenizer call (issue 34): the counts
    and the prompts are those of one call per text."""
    from sweep.tasks.base import counted

    count = count_tokens(native)
    texts = [" " + n for n in ioi.NAMES[:40]] + ["Then, a b c", "", " Mary"]
    assert count.many(texts) == [count(t) for t in texts]
    cached = counted(count, texts[:5])
    assert [cached(t) for t in texts] == [count(t) for t in texts]
    spec = spec_of(["task=ioi", "task.n_prompts=20"]).task
    one_by_one = load_examples(spec, lambda s: count(s))  # no ``many``: counted one by one
    assert load_examples(spec, count) == one_by_one
