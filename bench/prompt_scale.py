"""Large sweeps: memory, rate and time to the first unit as the number of prompts grows.

    python bench/prompt_scale.py [--sizes 256,1024,4096,16384] [--kill 16384] [--device cpu]

A GPT-2-small-shaped checkpoint (random weights, saved locally with a BPE tokenizer trained
on the IOI corpus), IOI prompts of 15 tokens, ``grid.components=[resid_pre]
grid.layers=[0,6,11] runner.memory_mb=1024``. Each size runs ``python -m sweep`` in a fresh
process; the bench reads that process's peak resident memory (``wait4``), polls the store
for the first unit written, and takes the sweep's own rate (cells x prompts per second of
sweeping). ``--kill N`` runs size N killed (SIGKILL) half way and resumed by the same
command instead of once: its row sums both runs (peak, first unit from the killed run, rate
from the resumed one), and its work column is their sweeping seconds over those of one
uninterrupted run, estimated as all units at the resumed run's seconds per unit (1.00:
nothing lost but the units in flight at the kill). ``--also-uninterrupted`` runs N once
more, uninterrupted, and divides by its measured time instead. ``--partial N:MINUTES``
runs size N for that long only, then kills it: a row of the units it finished, for sizes
whose whole sweep takes longer than the session measuring them.

Two rates: the sweep's own (cells x prompts over its sweeping seconds, which include
building every block's cached runs), and the steady rate seen from outside (units written
after the first one, over the time between the first and the last), which a partial run
has too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from sweep.store.status import done_marks

LAYERS = "[0,6,11]"
TEMPLATE = "When{a} and{b} went to the store,{s} gave a drink to"


def checkpoint(directory: Path, **shape: int) -> Path:
    """GPT-2-small shape (12 layers, d_model 768, 12 heads, vocab 50257; ``shape``: other
    ``GPT2Config`` sizes), random weights, with a BPE tokenizer trained on the IOI corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from sweep.tasks import ioi

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(ioi.corpus(), trainer)
    special = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special,
                                   unk_token=special, pad_token=special)  # fmt: skip
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    sizes = {"n_embd": 768, "n_layer": 12, "n_head": 12, **shape}
    cfg = GPT2Config(vocab_size=50257, n_positions=128, bos_token_id=0, eos_token_id=0,
                     **sizes)  # fmt: skip
    GPT2LMHeadModel(cfg).eval().save_pretrained(directory)
    return directory


def task_file(path: Path, n: int, tokenizer_dir: Path) -> Path:
    """``n`` IOI prompts of 15 tokens (BOS + 14), names drawn at random (seeded)."""
    from transformers import PreTrainedTokenizerFast

    from sweep.tasks.ioi import NAMES

    tok = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    names = [" " + x for x in NAMES if len(tok.encode(" " + x)) == 1]
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for _ in range(n):
            a, b, c, d, e = rng.choice(names, 5, replace=False)
            row = {
                "clean": TEMPLATE.format(a=a, b=b, s=b),
                "corrupted": TEMPLATE.format(a=c, b=d, s=e),
                "answer": a,
                "wrong": b,
            }
            f.write(json.dumps(row) + "\n")
    return path


def sweep_once(
    args: list[str], store: Path, kill_at: float | None = None, stop_after: float | None = None
) -> dict:
    """One ``python -m sweep`` process: peak RSS (MB), seconds to the first unit written,
    the sweep's own seconds and cells, and the units written over time; killed once
    ``kill_at`` of the units are done, or after ``stop_after`` seconds."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "sweep", *args, f"store.path={store}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    seen: list[tuple[float, int]] = []  # (seconds, units done) at each change
    killed = False
    while True:  # wait4, not poll: poll would reap the child and lose its rusage
        pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        done = done_marks(store)
        count = int((done > 0).sum())
        now = time.perf_counter() - start
        if count and (not seen or count != seen[-1][1]):
            seen.append((now, count))
        if first is None and count:
            first = now
        late = stop_after is not None and now > stop_after
        if late or (kill_at is not None and done.size and (done > 0).mean() >= kill_at):
            proc.send_signal(signal.SIGKILL)
            killed = True
            _, _, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = 0
    out = proc.stdout.read() if proc.stdout else ""
    seconds = time.perf_counter() - start
    final = int((done_marks(store) > 0).sum())
    if final and (not seen or seen[-1][1] != final):
        seen.append((seconds, final))
    m = re.search(r"units: (\d+) computed this run.*?(\d+) cells in ([\d.]+) s", out)
    steady = None
    if len(seen) >= 2 and seen[-1][0] > seen[0][0]:
        steady = (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])  # units/s
    return {
        "peak_mb": usage.ru_maxrss / 1024,
        "first_unit_s": first,
        "seconds": seconds,
        "units": int(m.group(1)) if m else final,  # a killed run started from an empty store
        "sweep_s": float(m.group(3)) if m else None,
        "steady_units_s": steady,
        "killed": killed,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="256,1024,4096,16384")
    p.add_argument("--kill", type=int, default=16384, help="size run killed half way (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-mb", type=float, default=1024.0)
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--also-uninterrupted", action="store_true")
    p.add_argument("--partial", default=None, help="N:MINUTES: run size N that long only")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = checkpoint(Path(tmp) / "gpt2-small-shape")
        print(f"device: {a.device}; GPT-2-small shape; IOI prompts of 15 tokens; resid_pre "
              f"layers {LAYERS}; runner.memory_mb={a.memory_mb:g}", flush=True)  # fmt: skip
        print("| prompts | prompt block | units | peak RSS MB | first unit s | cell-prompts/s | "
              "steady cell-prompts/s | work | wall s |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        partial_n, minutes = (int(x) for x in a.partial.split(":")) if a.partial else (0, 0)
        for n in (int(x) for x in a.sizes.split(",")):
            task = task_file(Path(tmp) / f"task{n}.jsonl", n, model)
            store = Path(tmp) / f"s{n}.zarr"
            args = [
                "model=hf", f"model.name={model}", f"model.device={a.device}", "task=prompts",
                f"task.path={task}", "grid.components=[resid_pre]", f"grid.layers={LAYERS}",
                f"runner.memory_mb={a.memory_mb:g}", "runner.progress=false", "store.plots=false",
            ]  # fmt: skip
            once = None
            if n == partial_n:
                runs = [sweep_once(args, store, stop_after=60.0 * minutes)]
                rows.append(_row(n, store, runs, partial=True))
                print(_line(rows[-1]), flush=True)
                continue
            if n != a.kill or a.also_uninterrupted:
                once = _row(n, store, [sweep_once(args, store)])
                rows.append(once)
                print(_line(once), flush=True)
            if n == a.kill:
                store = Path(tmp) / f"killed{n}.zarr"
                runs = [sweep_once(args, store, kill_at=0.5)]
                runs.append(sweep_once(args, store))
                rows.append(_row(n, store, runs, uninterrupted=once))
                print(_line(rows[-1]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


def _row(
    n: int,
    store: Path,
    runs: list[dict],
    uninterrupted: dict | None = None,
    partial: bool = False,
) -> dict:
    units = int(done_marks(store).size)
    block = int(zarr.open_group(str(store), mode="r").attrs["prompt_block"])
    cell_prompts = 3 * 15 * n  # 3 layers x 15 positions x n prompts
    steady = runs[-1]["steady_units_s"]
    row = {
        "prompts": n,
        "block": block,
        "units": units,
        "units_done": int((done_marks(store) > 0).sum()),
        "peak_mb": max(r["peak_mb"] for r in runs),
        "first_unit_s": runs[0]["first_unit_s"],
        "steady_rate": cell_prompts / units * steady if steady else None,
        "wall_s": sum(r["seconds"] for r in runs),
        "killed": runs[0]["killed"],
        "partial": partial,
    }
    if partial:
        return {**row, "rate": None, "work": None}
    # A killed run prints nothing: its sweeping time is its wall time less the loading time
    # of the run that finished (model, task, first cached block).
    loading = runs[-1]["seconds"] - (runs[-1]["sweep_s"] or 0)
    sweep_s = sum(r["sweep_s"] or r["seconds"] - loading for r in runs)
    return {
        **row,
        "rate": cell_prompts * (runs[-1]["units"] / units) / (runs[-1]["sweep_s"] or 1e-9),
        "work": sweep_s / _one_run_seconds(runs, units, uninterrupted),
        "units_computed": sum(r["units"] for r in runs),
        "sweep_s": sweep_s,
    }


def _one_run_seconds(runs: list[dict], units: int, uninterrupted: dict | None) -> float:
    """Sweeping seconds of one uninterrupted run: measured, or (a killed run) all units at
    the resumed run's seconds per unit (units of one size take about the same time)."""
    if uninterrupted is not None:
        return float(uninterrupted["sweep_s"])
    last = runs[-1]
    if len(runs) == 1:
        return float(last["sweep_s"] or 1e-9)
    return float(last["sweep_s"] or 1e-9) * units / max(last["units"], 1)


def _line(r: dict) -> str:
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    note = " (killed half way, resumed)" if r["killed"] and not r["partial"] else ""
    units = str(r["units"])
    if r["partial"]:
        note = f" (first {r['units_done']} units only, then killed)"
        units = f"{r['units_done']} of {r['units']}"
    return (
        f"| {r['prompts']:,}{note} | {r['block']} | {units} | {r['peak_mb']:.0f} | "
        f"{num(r['first_unit_s'], '.1f')} | {num(r['rate'], '.0f')} | "
        f"{num(r['steady_rate'], '.0f')} | {num(r['work'], '.2f')} | {r['wall_s']:.0f} |"
    )


if __name__ == "__main__":
    main()
