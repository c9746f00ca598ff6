"""Shared fixtures: tiny real models built locally (no hub), task files, seeding."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

NAMES = ["Mary", "John", "Kevin", "Laura", "Sarah", "James", "Lisa", "Paul", "Amy", "Mark"]
TEMPLATE = "When {a} and {b} went to the store, {s} gave a drink to"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


def _train_tokenizer(directory: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sweep import ioi

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(ioi.corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.save_pretrained(directory)
    return len(fast)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 checkpoint with its own BPE tokenizer, saved like a hub download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2-tiny")
    vocab = _train_tokenizer(d)
    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.2,  # large enough that every component moves the logits
    )
    GPT2LMHeadModel(cfg).eval().save_pretrained(d)
    return d


def write_task(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ioi_rows(n: int = 4) -> list[dict[str, str]]:
    """Same-template IOI rows: every prompt has the same token count."""
    rows = []
    for i in range(n):
        a, b, c, d, e = (NAMES[(i + k) % len(NAMES)] for k in range(5))
        rows.append(
            {
                "clean": TEMPLATE.format(a=a, b=b, s=b),
                "corrupted": TEMPLATE.format(a=c, b=d, s=e),
                "answer": " " + a,
                "wrong": " " + b,
            }
        )
    return rows


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    return write_task(tmp_path / "task.jsonl", ioi_rows())


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, on loopback, with two fake GPUs so that
    GPU pinning is checked on CPU-only machines. Stopped at the end: only what we started."""
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def set_cell(c: Any, value: torch.Tensor, pos: int, head: int) -> Any:
    """A hand-written TransformerLens hook, independent of sweep's patch code: the cell
    (pos and/or head of component ``c``) takes ``value``'s entries (same layout)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if c.act_kind == "resid":
            act[:, pos] = value[:, pos]
        elif c.act_kind == "pattern":
            act[:, head] = value[:, head]
        elif c.has_pos:
            act[:, pos, head] = value[:, pos, head]
        else:
            act[:, :, head] = value[:, :, head]
        return act

    return hook


def native_prompts(task: Path, n_layers: int = 3) -> list[str]:
    """Overrides for a random-weight native model of ``n_layers`` on a task file."""
    return [
        "model=native",
        f"model.native.n_layers={n_layers}",
        "task=prompts",
        f"task.path={task}",
    ]
