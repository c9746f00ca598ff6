"""Shared fixtures: tiny real models built locally (no hub), seeding, one local Ray."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from helpers import ioi_rows, write_task

from tests import zygote

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


IMAGE_TEST = "tests/runners/test_image.py::test_the_image_runs_a_sweep"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the container image as soon as its test is selected: the build is
    minutes of downloads and copies that would otherwise run alone near the end."""
    from concurrent.futures import ThreadPoolExecutor

    for item in session.items:
        if item.nodeid == IMAGE_TEST:
            module = item.module  # type: ignore[attr-defined]
            module.BUILDING.append(ThreadPoolExecutor(1).submit(module.build))
            IMAGE_MODULE.append(module)


IMAGE_MODULE: list = []
"""tests/runners/test_image.py as pytest imported it, once its build has started."""


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A build started for a test that never ran (a stop on the first failure) is waited
    for and its images removed, so none is left behind."""
    for module in IMAGE_MODULE:
        module.BUILDING[0].exception()
        module.remove_images()
    zygote.close()


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


def _train_tokenizer(directory: Path, add_bos: bool = False) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
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
    if add_bos:  # like Llama's and Gemma's tokenizers: BOS prepended by the tokenizer itself
        bos = "<|endoftext|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
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
    from helpers import save_gpt2

    d = tmp_path_factory.mktemp("gpt2-tiny")
    vocab = _train_tokenizer(d)
    # initializer_range: large enough that every component moves the logits
    return save_gpt2(d, vocab, 1, n_embd=64, n_layer=2, n_head=4, initializer_range=0.2)


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


FAMILIES = {
    # name: (config class, model class, extra config)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 2}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"num_key_value_heads": 2,
                                                         "sliding_window": 6}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"num_key_value_heads": 2}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"num_key_value_heads": 2, "head_dim": 16,
                                                      "sliding_window": 6,
                                                      "query_pre_attn_scalar": 16}),
    "neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"rotary_pct": 0.5,
                                                     "use_parallel_residual": True}),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", {"rotary_dim": 8}),
}  # fmt: skip
"""Small random checkpoints of each model family, saved like a user's checkpoint."""
BOS_ADDED = {"llama", "mistral", "gemma2"}
"""Their tokenizers add a BOS token themselves (as Llama's and Gemma's do); the others
(Qwen2, Pythia) do not."""


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory):
    """``family_dir(name)``: the directory of that family's checkpoint, built once."""
    import transformers

    built: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in built:
            d = tmp_path_factory.mktemp(name)
            vocab = _train_tokenizer(d, add_bos=name in BOS_ADDED)
            config_cls, model_cls, extra = FAMILIES[name]
            torch.manual_seed(1)
            shape = {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 128,
            }
            if name == "gptj":  # GPT-J names its shape its own way
                shape = {
                    "n_embd": 64,
                    "n_inner": 128,
                    "n_layer": 2,
                    "n_head": 4,
                    "n_positions": 128,
                }
            cfg = getattr(transformers, config_cls)(
                vocab_size=vocab, initializer_range=0.2, bos_token_id=0, eos_token_id=0,
                pad_token_id=0, **shape, **extra,
            )  # fmt: skip
            getattr(transformers, model_cls)(cfg).eval().save_pretrained(d)
            built[name] = d
        return built[name]

    return make
