"""The shipped circuit tasks beside IOI and induction: greater-than (Hanna et al. 2023),
subject-verb agreement and docstrings (Heimersheim and Janiak 2023), generated offline.
Checked on a GPT-2 checkpoint whose tokenizer reads years as GPT-2's does (the century,
then a two-digit ending): the prompts, sets and named positions token by token, the
paper's metric against one computed by hand from the model's logits, and a tokenizer that
cannot read the task refused in one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_gpt2, spec_of, train_tokenizer

import sweep
from sweep.errors import TaskError
from sweep.models import load_model
from sweep.tasks import docstring, greater_than, load_examples, sva
from sweep.tasks.base import as_set
from sweep.tasks.tokenize import count_tokens, tokenize

QUIET = ["runner.progress=false", "store.plots=false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2 with a BPE tokenizer trained on the two tasks' text, with
    two-digit groups as pre-tokens (' 1732' -> ' 17', '32')."""
    d = tmp_path_factory.mktemp("gpt2-tasks")
    vocab = train_tokenizer(d, greater_than.corpus() + sva.corpus() + docstring.corpus())
    return save_gpt2(d, vocab, 2, n_embd=64, n_layer=2, n_head=4, initializer_range=0.2)


def _model(checkpoint: Path):  # type: ignore[no-untyped-def]
    return load_model(spec_of(["model=hf", f"model.name={checkpoint}"]).model)


def _task(model, kind: str, n: int = 12):  # type: ignore[no-untyped-def]
    spec = spec_of([f"task={kind}", f"task.n_prompts={n}", "task.seed=1"]).task
    examples = load_examples(spec, count_tokens(model))
    return examples, tokenize(examples, model)


def _rows(task, i: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Prompt ``i``'s clean and corrupted token ids, unpadded."""
    at = slice(task.offsets[i], task.offsets[i] + task.lengths[i])
    return task.clean_ids[at], task.corrupted_ids[at]


def test_greater_than_prompts_sets_and_positions(checkpoint: Path) -> None:
    model = _model(checkpoint)
    examples, task = _task(model, "greater_than")
    names = list(task.position_names)
    assert names == ["NOUN", "XX1", "YY", "END"]
    token = model.tokenizer.convert_ids_to_tokens
    for i, e in enumerate(examples):
        m = re.fullmatch(r"The (\w+) lasted from the year (\d\d)(\d\d) to the year (\d\d)", e.clean)
        assert m is not None and m.group(2) == m.group(4), e.clean
        start = int(m.group(3))
        assert e.corrupted == e.clean.replace(f"{m.group(2)}{m.group(3)} ", f"{m.group(2)}01 ")
        assert e.answer == tuple(f"{k:02d}" for k in range(start + 1, 100))
        assert e.wrong == tuple(f"{k:02d}" for k in range(start + 1))
        row, corrupted = (r.tolist() for r in _rows(task, i))
        at = dict(zip(names, task.named[i].tolist(), strict=True))
        assert token(row[at["NOUN"]]) == "Ġ" + m.group(1)
        assert token(row[at["XX1"]]) == "Ġ" + m.group(2)
        assert token(row[at["YY"]]) == m.group(3)
        assert at["END"] == len(row) - 1 and token(row[-1]) == "Ġ" + m.group(2)
        answers = task.answer[i][task.answer[i] >= 0].tolist()
        assert token(answers) == list(e.answer)
        differs = np.flatnonzero(np.asarray(row) != np.asarray(corrupted))
        assert differs.tolist() == [at["YY"]]
    assert task.answer.shape[1] == max(len(e.answer) for e in examples)


def test_sva_prompts_alternate_numbers_and_differ_only_at_the_subject(checkpoint: Path) -> None:
    model = _model(checkpoint)
    examples, task = _task(model, "sva")
    names = list(task.position_names)
    token = model.tokenizer.convert_ids_to_tokens
    for i, e in enumerate(examples):
        singular = i % 2 == 0
        assert (e.answer, e.wrong) == ((sva.SINGULAR, sva.PLURAL) if singular
                                       else (sva.PLURAL, sva.SINGULAR))  # fmt: skip
        at = dict(zip(names, task.named[i].tolist(), strict=True))
        row, corrupted = _rows(task, i)
        assert np.flatnonzero(row != corrupted).tolist() == [at["SUBJ"]]
        subject = token(int(row[at["SUBJ"]]))[1:]
        numbers = dict(sva.NOUNS) if singular else {p: s for s, p in sva.NOUNS}
        assert subject in numbers, subject
        distractor = token(int(row[at["DISTRACTOR"]]))[1:]
        assert distractor in (dict(sva.NOUNS).values() if singular else dict(sva.NOUNS))


def test_docstring_prompts_name_the_next_parameter(checkpoint: Path) -> None:
    model = _model(checkpoint)
    examples, task = _task(model, "docstring")
    names = list(task.position_names)
    token = model.tokenizer.convert_ids_to_tokens
    for i, e in enumerate(examples):
        params = re.search(r"\(self, (.*)\):", e.clean).group(1).split(", ")  # type: ignore[union-attr]
        documented = re.findall(r":param (\w+):", e.clean)
        assert len(params) == 6 and documented == params[:3], e.clean
        assert e.clean.endswith("\n    :param") and e.answer == " " + params[3]
        assert e.wrong == tuple(" " + p for p in params if p != params[3])
        replaced = re.findall(r":param (\w+):", e.corrupted)
        assert not set(replaced) & set(params) and len(replaced) == 3
        assert e.corrupted.split('"""')[0] == e.clean.split('"""')[0]
        at = dict(zip(names, task.named[i].tolist(), strict=True))
        row, corrupted = _rows(task, i)
        doc = [at[n] for n in ("A_doc", "B_doc", "C_doc")]
        assert np.flatnonzero(row != corrupted).tolist() == doc
        for k, name in enumerate(("A", "B", "C")):
            assert token(int(row[at[f"{name}_def"]])) == "Ġ" + params[k]
            assert token(int(row[at[f"{name}_doc"]])) == "Ġ" + params[k]
        assert task.wrong.shape == (len(examples), 5)


@pytest.mark.parametrize("kind", ["greater_than", "sva", "docstring"])
def test_the_papers_metric_from_the_models_own_logits(
    checkpoint: Path, tmp_path: Path, kind: str
) -> None:
    """prob_diff of the clean and corrupted runs as stored equals p(answer set) - p(wrong
    set) from the model's logits, by hand; a sweep at the task's named positions."""
    metric = "logit_gap" if kind == "docstring" else "prob_diff"
    over = ["model=hf", f"model.name={checkpoint}", f"task={kind}", "task.n_prompts=6",
            f"metric.names=[{metric}]", "grid.components=[resid_pre]",
            f"grid.positions=[{sweep_position(kind)},END]", *QUIET,
            f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    model = _model(checkpoint)
    examples = load_examples(spec_of(over).task, count_tokens(model))
    for run in ("clean", "corrupted"):
        for p, e in enumerate(examples):
            ids = model.to_tokens(getattr(e, run))
            with torch.no_grad():
                logits = model(ids)[0, -1].double()
            ones = [model.to_single_token(t) for t in as_set(e.answer)]
            others = [model.to_single_token(t) for t in e.wrong]
            if metric == "logit_gap":  # one answer, the best of the wrong ones
                want = float(logits[ones[0]] - logits[others].max())
            else:
                probs = logits.softmax(-1)
                want = float(probs[ones].sum() - probs[others].sum())
            got = float(ds[f"{run}_baseline"].sel(metric=metric)[p])
            assert got == pytest.approx(want, abs=1e-5), (run, p)
    assert list(ds["pos"].values) == [sweep_position(kind), "END"]
    assert np.isfinite(ds["resid_pre"].values).all()


def sweep_position(kind: str) -> str:
    return {"greater_than": "YY", "sva": "SUBJ", "docstring": "C_doc"}[kind]


@pytest.mark.parametrize(
    ("kind", "says"),
    [("greater_than", "does not read years as the century and a two-digit ending"),
     ("sva", "of the task's nouns in both numbers as one token each (it needs 2)"),
     ("docstring", "parameter names as one token (it needs 10)")],
)  # fmt: skip
def test_a_tokenizer_that_cannot_read_the_task_is_one_line(
    tmp_path: Path, kind: str, says: str
) -> None:
    over = ["model=native", f"task={kind}", f"store.path={tmp_path / 's.zarr'}"]
    with pytest.raises(TaskError) as e:
        sweep.run(over)
    assert str(e.value).startswith(f"task={kind}: ") and says in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "s.zarr").exists()
