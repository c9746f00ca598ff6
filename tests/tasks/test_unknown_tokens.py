"""Answers the tokenizer only knows as its unknown token are refused; prompts holding it
get a warning with their count. A word-level tokenizer has an unknown token of its own,
as SentencePiece models such as Llama's do."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from helpers import ioi_rows, save_gpt2, write_task

from tests.zygote import python_m

BOS, UNK = "<bos>", "<unk>"


@pytest.fixture(scope="module")
def word_level_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 checkpoint whose tokenizer is word-level with an ``<unk>`` token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for r in ioi_rows(8) for t in r.values() for w in t.split()})
    vocab = {BOS: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, 0)]
    )
    d = tmp_path_factory.mktemp("word-level")
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS, unk_token=UNK
    ).save_pretrained(d)
    return save_gpt2(d, len(vocab), 0, n_embd=32, n_layer=1, n_head=2)


def _sweep(tmp: Path, model_dir: Path, rows: list[dict[str, str]]) -> subprocess.CompletedProcess:
    task = write_task(tmp / "task.jsonl", rows)
    args = [
        "model=hf", f"model.name={model_dir}", "task=prompts", f"task.path={task}",
        "grid.components=[resid_pre]", "store.plots=false", "runner.progress=false",
        f"store.path={tmp / 's.zarr'}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return python_m(["sweep", *args], tmp, env, timeout=300)


@pytest.mark.parametrize("field", ["answer", "wrong"])
def test_an_answer_the_tokenizer_does_not_know_is_refused(
    field: str, word_level_dir: Path, tmp_path: Path
) -> None:
    rows = ioi_rows(4)
    rows[2] = {**rows[2], field: " Zorblax"}
    out = _sweep(tmp_path, word_level_dir, rows)
    # transformers' "Loading weights" progress bar comes first: the task is checked by the
    # model's own tokenizer, after loading.
    lines = [x for x in out.stderr.splitlines() if x.startswith("patchsweep:")]
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().endswith(lines[0])
    assert f"task.jsonl:3: {field} ' Zorblax'" in lines[0]
    assert UNK in lines[0]
    assert not (tmp_path / "s.zarr").exists()


def test_prompts_with_the_unknown_token_are_counted_in_a_warning(
    word_level_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    from sweep.tasks.base import Example
    from sweep.tasks.tokenize import tokenize

    model = TransformerBridge.boot_transformers(str(word_level_dir), device="cpu")
    rows = ioi_rows(4)
    examples = [Example(source=f"t:{i + 1}", **r) for i, r in enumerate(rows)]
    examples[1] = Example(
        source="t:2", clean=rows[1]["clean"] + " Qux", corrupted=rows[1]["corrupted"] + " Qux",
        answer=rows[1]["answer"], wrong=rows[1]["wrong"],
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        task = tokenize(examples, model)
    assert task.n_prompts == 4
    warned = [r.getMessage() for r in caplog.records if UNK in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("1 of 4 prompts"), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tokenize(examples[:1] + examples[2:], model)
    assert not [r for r in caplog.records if UNK in r.getMessage()]
