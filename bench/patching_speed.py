"""patchsweep's engine against transformer_lens.patching on the same model and grid.

    python bench/patching_speed.py [--models gpt2-small,small] [--device cpu|cuda]
    python bench/patching_speed.py --family gpt2|llama|neox|gemma2|qwen2 [--dtype bfloat16]

``--family`` benchmarks that family's shape at about GPT-2-small size (12 layers,
d_model 768, 12 query heads, vocab 50257): a Hugging Face checkpoint with random weights,
saved locally and loaded by directory (``gpt2``: the native GPT-2-small shape), Llama with
4 key/value heads and a gated MLP of 2048, GPT-NeoX with Pythia's quarter rotary and
parallel attention and MLP, Gemma 2 and Qwen2 shaped like Llama.
Both run in this process on the same random-weight model, the same 8 prompts of 15 tokens
and the same metric (logit difference at the last position). For each grid it prints the
measured speed-up (TransformerLens seconds / patchsweep seconds), the FLOP ceiling of that
grid (a full forward per cell over the work a cell really needs: layers >= l, positions
>= p, the last position's logits), the fraction of the ceiling reached, and peak memory.
It then runs patchsweep's resid_pre grid under low ``runner.memory_mb`` budgets, each in a
fresh process, and reports whether the peak stayed under the budget.
Peak memory: on CPU the rise of the process's peak resident set (Linux VmHWM, reset before
each measurement); on CUDA ``torch.cuda.max_memory_allocated``. Results are checked equal.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching's progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformer_lens.patching as tlp  # noqa: E402

import sweep
from sweep.components import get_component
from sweep.config import to_spec
from sweep.engine.worker import Worker
from sweep.models.native import build_tokenizer
from sweep.plan import WorkUnit
from sweep.tasks.ioi import NAMES

MODELS = {
    "gpt2-small": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072),
    "small": dict(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024),
}
GQA = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=2048, n_kv=4, gated=True)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", GQA, {"num_key_value_heads": 4}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", GQA, {"num_key_value_heads": 4}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", GQA,
               {"num_key_value_heads": 4, "head_dim": 64, "query_pre_attn_scalar": 64}),
    "neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {**MODELS["gpt2-small"], "n_kv": 12},
             {"rotary_pct": 0.25, "use_parallel_residual": True}),
}  # fmt: skip
"""Family: (config class, model class, shape for the FLOP ceiling, extra config)."""
TL = {"resid_pre": tlp.get_act_patch_resid_pre, "z": tlp.get_act_patch_attn_head_out_all_pos}
SEQ, PROMPTS, VOCAB = 15, 8, 50257


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="gpt2-small,small")
    p.add_argument("--family", default=None, help="gpt2, llama, neox, gemma2 or qwen2")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--grids", default="resid_pre,z")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-mb", type=float, default=1024.0)
    p.add_argument("--budgets", default="64,256", help="low runner.memory_mb values to check")
    p.add_argument("--peak-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.family:
        args.models = "gpt2-small" if args.family == "gpt2" else args.family
    torch.manual_seed(0)
    if args.peak_only:  # one budget, in a fresh process (see _budget_row)
        with tempfile.TemporaryDirectory() as tmp:
            w = _worker(args.models, Path(tmp), args.device, args.memory_mb, args.dtype)
            unit = _unit(w, "resid_pre")
            w.run(_unit_first_layer(unit))
            _, peak = _measure(lambda: w.run(unit), args.device)
            cells = w.cells_per_forward(w.block(0, w.task.n_prompts))
            print(json.dumps({"peak_mb": peak, "cells_per_forward": cells}))
        return
    dev = f"{args.device} ({_device_name(args.device)}, {torch.get_num_threads()} threads)"
    print(f"device: {dev}; {PROMPTS} prompts x {SEQ} tokens; vocab {VOCAB}; random weights; "
          f"{args.dtype}")  # fmt: skip
    head = "| model | grid | cells | TL s | patchsweep s | speed-up | ceiling | of ceiling "
    print(head + "| cells/s | peak MB TL | peak MB patchsweep |")
    print("|" + " --- |" * 11)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            w = _worker(name, Path(tmp), args.device, args.memory_mb, args.dtype)
            for grid in args.grids.split(","):
                print(_row(name, grid, w, args.dtype), flush=True)
    print("\n| model | runner.memory_mb | cells per forward | peak MB (resid_pre grid) |")
    print("| --- | --- | --- | --- |")
    for name in args.models.split(","):
        for budget in args.budgets.split(","):
            print(_budget_row(name, float(budget), args.device, args.dtype), flush=True)


def _budget_row(name: str, budget: float, device: str, dtype: str) -> str:
    """Peak memory of a whole resid_pre grid under a low budget, measured in a fresh
    process: a process that already ran other sweeps keeps freed memory resident."""
    cmd = [sys.executable, __file__, "--peak-only", "--models", name, "--device", device,
           "--dtype", dtype]  # fmt: skip
    out = subprocess.run(
        [*cmd, "--memory-mb", str(budget)], check=True, capture_output=True, text=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    verdict = "within" if got["peak_mb"] <= budget else "OVER"
    return (
        f"| {name} | {budget:g} | {got['cells_per_forward']} | "
        f"{got['peak_mb']:.0f} ({verdict} budget) |"
    )


def _checkpoint(family: str, directory: Path) -> Path:
    """A Hugging Face checkpoint of the family at about GPT-2-small size, random weights,
    with a BPE tokenizer trained on the IOI corpus (vocabulary padded to 50257)."""
    import transformers

    if not (directory / "config.json").exists():
        tok = build_tokenizer()
        tok.save_pretrained(directory)
        config_cls, model_cls, shape, extra = FAMILIES[family]
        cfg = getattr(transformers, config_cls)(
            vocab_size=VOCAB, hidden_size=shape["d_model"], num_hidden_layers=shape["n_layers"],
            num_attention_heads=shape["n_heads"], intermediate_size=shape["d_mlp"],
            max_position_embeddings=128, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra,
        )  # fmt: skip
        torch.manual_seed(0)
        getattr(transformers, model_cls)(cfg).eval().save_pretrained(directory)
    return directory


def _worker(name: str, tmp: Path, device: str, memory_mb: float, dtype: str) -> Worker:
    task = tmp / "task.jsonl"
    _write_task(task)
    if name in FAMILIES:
        model = ["model=hf", f"model.name={_checkpoint(name, tmp / name)}"]
    else:
        shape = {**MODELS[name], "n_ctx": 64}
        model = [f"model.native.{k}={v}" for k, v in shape.items()]
        model += ["model=native", f"+model.native.d_vocab={VOCAB}"]
    overrides = [
        *model,
        f"model.device={device}",
        f"model.dtype={dtype}",
        "task=prompts",
        f"task.path={task}",
        "grid.components=[resid_pre,z]",
        f"runner.memory_mb={memory_mb}",
        "runner.engine=fast",
    ]
    w = Worker(to_spec(sweep.compose_config(overrides)))
    assert bool((w.task.lengths == w.task.seq_len).all()), "prompts of one length"
    return w


def _write_task(path: Path) -> None:
    """Name lists of 15 tokens (BOS + 14 single-token names); the corruption swaps names."""
    tokenizer = build_tokenizer()
    names = [n for n in NAMES if len(tokenizer.encode(" " + n, add_special_tokens=False)) == 1]
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(PROMPTS):
        words = [" " + n for n in rng.choice(names, size=2 * (SEQ - 1))]
        clean, corrupted = "".join(words[: SEQ - 1]), "".join(words[SEQ - 1 :])
        rows.append({"clean": clean, "corrupted": corrupted, "answer": " Mary", "wrong": " John"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _unit(w: Worker, grid: str) -> WorkUnit:
    cells = w.axes.of(get_component(grid))
    return WorkUnit(0, grid, 0, w.axes.layers, cells, 0, w.task.n_prompts)


def _row(name: str, grid: str, w: Worker, dtype: str) -> str:
    unit = _unit(w, grid)
    w.run(_unit_first_layer(unit))  # warm-up
    ours, ours_mb = _measure(lambda: w.run(unit), w.device)
    clean, corrupted = (ids.to(w.device) for ids in w.task.rows(np.arange(w.task.n_prompts)))
    model = w.model
    _, clean_cache = model.run_with_cache(clean)
    answer, wrong = w.task.answer.to(w.device), w.task.wrong.to(w.device)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        rows = torch.arange(len(last), device=last.device)
        return (last[rows, answer] - last[rows, wrong]).mean()

    def reference() -> Any:
        with torch.no_grad():
            return TL[grid](model, corrupted, clean_cache, metric)

    tl, tl_mb = _measure(reference, w.device)
    got = w.run(unit).values[0].mean(-1)
    want = reference().float().cpu().numpy()
    err = np.abs(got - want).max()
    tol = 1e-3 if dtype == "float32" else 0.1 * max(1.0, float(np.abs(want).max()))
    assert err < tol, f"{name} {grid}: patchsweep differs from TL by {err}"
    cells = got.size
    ceiling = _ceiling(name, grid, w.task.seq_len)
    speed = tl / ours
    return (
        f"| {name} ({w.forward.NAME}) | {grid} | {cells} | {tl:.1f} | {ours:.2f} | {speed:.2f}x | "
        f"{ceiling:.2f}x | {speed / ceiling:.0%} | {cells / ours:.0f} | {tl_mb:.0f} | "
        f"{ours_mb:.0f} |"
    )


def _unit_first_layer(unit: WorkUnit) -> WorkUnit:
    return WorkUnit(0, unit.component, 0, unit.layers[:1], unit.grid, 0, unit.prompt_stop)


def _ceiling(name: str, grid: str, seq: int = SEQ) -> float:
    """A full forward per cell over the FLOPs each cell needs (matmuls, 2 per MAC)."""
    m = FAMILIES[name][2] if name in FAMILIES else MODELS[name]
    n_layers, d, d_mlp = m["n_layers"], m["d_model"], m["d_mlp"]
    kv = d * m.get("n_kv", m["n_heads"]) // m["n_heads"]  # key/value width
    mlp = (6 if m.get("gated") else 4) * d * d_mlp

    def token(t: int, qkv: bool = True) -> int:
        """One layer at position t (attending to t + 1 keys)."""
        attn = 2 * (d * d + 2 * d * kv) + 4 * (t + 1) * d if qkv else 0
        return attn + 2 * d * d + mlp

    unembed = 2 * d * VOCAB
    full = n_layers * sum(token(t) for t in range(seq)) + seq * unembed
    need = []
    for layer in range(n_layers):
        later = (n_layers - layer - 1) * sum(token(t) for t in range(seq))
        if grid == "resid_pre":  # this layer and later ones, positions >= p
            need += [
                (n_layers - layer) * sum(token(t) for t in range(p, seq)) + unembed
                for p in range(seq)
            ]
        else:  # z of one head at every position: this layer from its output projection on
            rest = sum(token(t, qkv=False) for t in range(seq))
            need += [later + rest + unembed] * m["n_heads"]
    return full * len(need) / sum(need)


def _measure(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """Seconds, and the peak memory (MB) the call adds."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() - before) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return seconds, (_status_kb("VmHWM") - before) / 1024


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return "CPU"


if __name__ == "__main__":
    main()
