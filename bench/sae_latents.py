"""SAE latents per second: exact patching, attribution (AtP) and the hand-written loop.

    python bench/sae_latents.py [--prompts 16] [--d-sae 4096] [--top 32] [--reference 30]

A native model (4 layers, d_model 256, 4 heads, d_mlp 1024, random weights), IOI prompts,
denoising, logit_diff, and a random JumpReLU SAE of ``d_sae`` latents on
``blocks.2.hook_resid_pre`` saved in SAELens's format. Each sweep is its own
``python -m sweep`` process with a fresh store; the figure is the sweep's own seconds
(``cells in S s``: cached runs, units, zarr writes), loading aside:

- exact: ``sae_latents_by_pos`` over the ``top`` most active latents at every position;
- AtP: ``sae_latents_by_pos`` over every latent at every position (``intervention=atp``),
  its top 10 verified exactly;
- hand loop: what one writes without patchsweep, one hooked forward of the corrupted
  prompts per (latent, position), the latent changed through the decoder, in this process.

Cells are (latent, position) pairs, each over every prompt.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/

HOOK = "blocks.2.hook_resid_pre"
MODEL = ["model=native", "model.native.n_layers=4", "model.native.d_model=256",
         "model.native.d_head=64", "model.native.n_heads=4", "model.native.d_mlp=1024",
         "task=ioi"]  # fmt: skip


def sweep(args: list[str], store: Path) -> tuple[int, float]:
    """One ``python -m sweep`` process: its cells and sweep seconds."""
    out = subprocess.run([sys.executable, "-m", "sweep", *args, f"store.path={store}"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"(\d+) cells in ([\d.]+) s", out.stdout)
    assert m, out.stdout
    return int(m.group(1)), float(m.group(2))


def hand_loop(base: list[str], sae_dir: Path, n: int) -> float:
    """Cells per second of one hooked forward per (latent, position)."""
    import torch

    from sweep.config import to_spec
    from sweep.driver import compose_config
    from sweep.engine.worker import Worker
    from sweep.models.sae import Sae, read_config

    torch.set_num_threads(os.cpu_count() or 1)
    w = Worker(to_spec(compose_config([*base, "grid.components=[resid_pre]"])))
    sae = Sae(read_config(sae_dir))
    t = w.task
    clean, corrupted = t.rows(torch.arange(t.n_prompts).numpy())
    rows, last = torch.arange(t.n_prompts), torch.from_numpy(t.lengths - 1)
    with torch.no_grad():
        _, cache = w.model.run_with_cache(clean, names_filter=[HOOK])
        f_clean = sae.encode(cache[HOOK])
        start = time.perf_counter()
        for k in range(n):
            j, p = k % sae.cfg.d_sae, k % t.seq_len

            def hook(act: torch.Tensor, hook: object, j: int = j, p: int = p) -> torch.Tensor:
                f = sae.encode(act)
                new = f.clone()
                new[:, p, j] = f_clean[:, p, j]
                return act + sae.decode(new, act) - sae.decode(f, act)

            logits = w.model.run_with_hooks(corrupted, fwd_hooks=[(HOOK, hook)])
            (logits[rows, last, t.answer] - logits[rows, last, t.wrong]).sum().item()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--top", type=int, default=32)
    p.add_argument("--reference", type=int, default=30, help="cells the hand loop runs")
    a = p.parse_args()
    from tests.models.sae_files import save_sae

    tmp = Path(tempfile.mkdtemp(prefix="sae-bench-"))
    folder = save_sae(tmp / "sae", "jumprelu", 256, a.d_sae, HOOK)
    base = [*MODEL, f"task.n_prompts={a.prompts}", f"sae.path={folder}",
            "runner.progress=false", "store.plots=false",
            "grid.components=[sae_latents_by_pos]"]  # fmt: skip
    exact = sweep([*base, f"grid.latents=top:{a.top}"], tmp / "exact.zarr")
    atp = sweep([*base, "grid.latents=all", "intervention=atp",
                 "intervention.verify_top_k=10"], tmp / "atp.zarr")  # fmt: skip
    loop = hand_loop(base, folder, a.reference)
    print(f"native 4 layers, d_model 256; {a.prompts} IOI prompts; JumpReLU SAE of "
          f"{a.d_sae} latents on {HOOK}; CPU threads {os.cpu_count()}")  # fmt: skip
    print("| method | cells (latent x position) | seconds | cells/s | vs hand loop |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| hand loop, one hooked forward per cell | {a.reference} | "
          f"{a.reference / loop:.2f} | {loop:.1f} | 1.0x |")  # fmt: skip
    for name, (cells, secs) in (("patchsweep exact", exact), ("patchsweep AtP", atp)):
        rate = cells / secs
        print(f"| {name} | {cells} | {secs:.2f} | {rate:.0f} | {rate / loop:.0f}x |")


if __name__ == "__main__":
    main()
