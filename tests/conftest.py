"""Shared fixtures: tiny real models built locally (no hub), seeding, one local Ray."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from helpers import ioi_rows, write_task

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


def _train_tokenizer(directory: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sweep.tasks import ioi

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
