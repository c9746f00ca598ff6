"""Helpers shared by the tests: task files, overrides, a hand-written patch hook, and
TransformerLens' own patching results as the reference."""

from __future__ import annotations

import ctypes
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

NAMES = ["Mary", "John", "Kevin", "Laura", "Sarah", "James", "Lisa", "Paul", "Amy", "Mark"]
TEMPLATE = "When {a} and {b} went to the store, {s} gave a drink to"


def save_gpt2(directory: Path, vocab: int, seed: int, **config: Any) -> Path:
    """A random GPT-2 checkpoint (``transformers``) beside a tokenizer already saved in
    ``directory``, as a hub download looks; BOS and EOS are token 0."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, bos_token_id=0, eos_token_id=0, **config)
    GPT2LMHeadModel(cfg).eval().save_pretrained(directory)
    return directory


def train_tokenizer(directory: Path, corpus: list[str], vocab_size: int = 2000) -> int:
    """A GPT-2-style BPE tokenizer trained on ``corpus``, saved in ``directory``, that reads
    years as GPT-2 does (two-digit groups are pre-tokens: ' 1732' -> ' 17', '32'); its
    vocabulary size."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r" ?\d\d"), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(corpus, trainer)
    end = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=end, eos_token=end,
                                   unk_token=end, pad_token=end)  # fmt: skip
    fast.save_pretrained(directory)
    return len(fast)


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


RESID = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


def set_cell(c: Any, value: torch.Tensor, pos: int, head: int) -> Any:
    """A hand-written TransformerLens hook, independent of sweep's patch code: the cell
    (pos and/or head of component ``c``) takes ``value``'s entries (same layout)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if c.name in RESID:  # [batch, pos, d_model]
            act[:, pos] = value[:, pos]
        elif c.name == "pattern":  # [batch, head, q, k]
            act[:, head] = value[:, head]
        elif c.name.endswith("_by_pos"):  # [batch, pos, head, d_head]
            act[:, pos, head] = value[:, pos, head]
        else:  # z, q, k, v: one head at every position
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


def spec_of(overrides: list[str]) -> Any:
    """The frozen spec the overrides describe."""
    import sweep
    from sweep.config import to_spec

    return to_spec(sweep.compose_config(overrides))


def worker(overrides: list[str]) -> Any:
    from sweep.engine.worker import Worker

    return Worker(spec_of(overrides))


def can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_extra_mb(run: Any) -> float:
    """Resident memory the call adds at its peak (Linux: reset VmHWM, then read it)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kb("VmRSS")
    run()
    return (status_kb("VmHWM") - before) / 1024


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def in_fresh_process(code: str, *argv: str) -> Any:
    """Run ``code`` (which ends by printing one JSON value; its arguments are ``sys.argv[1:]``)
    in a new Python process: memory peaks are measured where no earlier test shaped the heap."""
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(here)}
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=here, capture_output=True,
                         text=True, timeout=600, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


MIXED = [
    "When {a} and {b} went to the store, {s} gave a drink to",
    "{a} and {b} talked, and {s} gave a book to",
    "Then {a} met {b} at the park near the old school, and later {s} handed a ball to",
]


def mixed_rows() -> list[dict[str, str]]:
    """Three prompts of three different token counts."""
    out = []
    for i, t in enumerate(MIXED):
        a, b, c, d, e = (NAMES[(i + k) % len(NAMES)] for k in range(5))
        clean, corrupted = t.format(a=a, b=b, s=b), t.format(a=c, b=d, s=e)
        out.append({"clean": clean, "corrupted": corrupted, "answer": " " + a, "wrong": " " + b})
    return out


def one_forward_per_cell(w: Any, name: str, positions: list[int]) -> np.ndarray:
    """[layer, (pos), (head), prompt] by one unbatched, unpadded forward per cell (the
    component as the worker's model lays it out: key/value heads on grouped-query models)."""
    c = w.shape.component(name)
    n_layers = w.shape.n_layers
    heads = w.shape.n_kv_heads if c.has("kv_head") else w.shape.n_heads
    pos_axis = positions if c.has("pos") else [-1]
    head_axis = range(heads) if c.has("head") or c.has("kv_head") else [-1]
    out = np.full((n_layers, len(pos_axis), len(head_axis), w.task.n_prompts), np.nan)
    for p_i in range(w.task.n_prompts):
        n = int(w.task.lengths[p_i])
        clean, corrupted = (ids[p_i : p_i + 1, :n] for ids in padded(w.task))
        a, b = int(w.task.answer[p_i]), int(w.task.wrong[p_i])
        _, cache = w.model.run_with_cache(clean)
        for layer in range(n_layers):
            src = cache[c.hook_name(layer)]
            for i, pos in enumerate(pos_axis):
                if pos >= n:
                    continue  # past this prompt's end: the engine stores NaN
                for j, head in enumerate(head_axis):
                    hook = (c.hook_name(layer), set_cell(c, src, pos, head))
                    logits = w.model.run_with_hooks(corrupted, fwd_hooks=[hook])[0, -1]
                    out[layer, i, j, p_i] = (logits[a] - logits[b]).item()
    shape = [n_layers] + ([len(pos_axis)] if c.has("pos") else [])
    shape += [heads] if c.has("head") or c.has("kv_head") else []
    return out.reshape(*shape, w.task.n_prompts)


def padded(task: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A tokenized task's clean and corrupted ids [prompt, pos], every prompt, padded to
    the longest: what a hand-written reference runs on."""
    clean, corrupted = task.rows(np.arange(task.n_prompts))
    return clean, corrupted


def file_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hydra's outputs/ aside) by its content's hash: what a
    failed command must leave as it found."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and "outputs" not in p.parts
    }


def user_module(directory: Path, monkeypatch: Any, name: str, code: str) -> Path:
    """``directory/name.py`` holding ``code``, importable as a user's metric module is: the
    working directory, on ``sys.path``, and not an earlier test's copy of the same name."""
    import sys

    (directory / f"{name}.py").write_text(code)
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))
    sys.modules.pop(name, None)
    return directory


def edge_block(w: Any, base_run: str) -> tuple[Any, list[Any], Any]:
    """A worker's graph shape, all its edges, and a block of all its prompts with the base
    run's and the clean run's edge activations cached: what an exact edge unit starts from."""
    from sweep.edges.graph import GraphShape, edges
    from sweep.engine.edges import edge_hooks
    from sweep.engine.runs import build_block

    cfg = w.model.cfg
    shape = GraphShape(int(cfg.n_layers), int(cfg.n_heads), mlp=not cfg.attn_only)
    hooks = edge_hooks(shape.n_layers, shape.mlp)
    base_hooks = hooks | w.forward.base_hooks(tuple(range(shape.n_layers)))
    block = build_block(w.model, w.task, np.arange(w.task.n_prompts), base_run, base_hooks, hooks)
    return shape, edges(shape), block


def kill_part_way(
    args: list[str], cwd: Path, store: str | Path, part: int, env: dict[str, str] | None = None,
    each: Any = None, timeout: float = 300,
) -> np.ndarray:  # fmt: skip
    """Run ``python -m sweep *args`` and SIGKILL it once ``1/part`` of its units are done,
    as a crash or the OOM killer would; the done marks it left. ``each(done)`` sees the
    marks at every poll (to look at the store while the sweep writes it)."""
    import time

    from sweep.store.status import done_marks
    from tests.zygote import python_popen

    log = Path(cwd) / "killed.log"  # the killed run's output, both streams
    proc = python_popen(["sweep", *args], cwd, env, log=log)
    deadline = time.monotonic() + timeout
    try:
        while (done := done_marks(str(store))).size == 0 or (done > 0).sum() < done.size // part:
            if each is not None:
                each(done)
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the sweep never did 1/{part} of its units"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(60)
    return done_marks(str(store))
