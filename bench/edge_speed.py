"""Exact edge patching: edges per second against one hooked forward per edge.

    python bench/edge_speed.py [--sample 300] [--per-forward 64] [--threads 2]
    python bench/edge_speed.py --shape small --edges 2000 --sample 40

``--shape small``: a GPT-2-small-shaped checkpoint (12 layers, d_model 768, 12 heads) whose
32,491 edges are projected from ``--edges`` of them drawn at random (every receiver layer
and kind is drawn; the time scales by the count), with the process's peak resident memory.

A GPT-2 checkpoint of 4 layers, d_model 256, 8 heads (random weights, vocab 50257, saved
locally with a BPE tokenizer trained on the IOI corpus), 8 IOI prompts of 15 tokens,
denoising, metric logit_diff. Every edge of the graph (``sweep.edges.graph``) is patched by
``sweep.engine.edges.edge_values``; the reference runs one hooked TransformerLens forward
per edge over the 8 prompts (the receiver's new input computed from the model's own
modules, as ``tests/edges/test_edge_patching.py`` does), timed on a sample of edges spread
over every receiver kind and layer. Both run in this process, one after the other; the
sample's values are compared (max abs difference).

The FLOP ceiling: what a full forward per edge computes (every layer and position, logits
at every position) over what each edge needs (layers from the receiver's on, positions
from the first one the sender's change reaches, logits at the last position only), with
per-token costs counted from the model's matmuls.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/

from prompt_scale import checkpoint, task_file  # noqa: E402

SHAPES = {
    "4l": dict(n_embd=256, n_layer=4, n_head=8),
    "small": dict(n_embd=768, n_layer=12, n_head=12),
}


def flop_ceiling(cfg, graph_edges, start: dict[str, int], seq: int) -> tuple[float, float]:
    """Full forward per edge over what each edge needs (multiply-adds of the matmuls):
    of the blocks alone, and with the logits (every position's against the last one's)."""
    d, d_mlp, vocab, n_layers = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_layers
    layer = 4 * d * d + 2 * d * d_mlp + 2 * seq * d  # per token: qkv+o, MLP, attention
    blocks, need = 0.0, 0.0
    for s, r in graph_edges:
        tokens = seq - min(start[s.name], seq - 1)
        blocks += max(0, n_layers - r.layer) * tokens * layer
    full = len(graph_edges) * n_layers * seq * layer
    need = blocks + len(graph_edges) * d * vocab
    return full / blocks, (full + len(graph_edges) * seq * d * vocab) / need


# The reference as peers run it: one hooked forward per edge, the receiver's new value
# computed from the GPT-2 block's own modules (tests/edge_reference.py holds the
# family-independent one the tests use, which spends two forwards per edge).


def sender_output(model, cache, s) -> torch.Tensor:
    """What a sender wrote into the residual stream, [batch, pos, d_model]."""
    if s.kind == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if s.kind == "mlp":
        return cache[f"blocks.{s.layer}.hook_mlp_out"]
    return cache[f"blocks.{s.layer}.attn.hook_z"][:, :, s.head] @ model.W_O[s.layer, s.head]


def edge_forward(model, base_cache, delta, r, base_tokens):
    """Logits [batch, vocab] at the last position of the base prompts, with only ``r``
    reading ``delta`` more."""
    if r.kind == "logits":
        hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        new = base_cache[hook] + delta
    elif r.kind == "mlp":
        block = model.blocks[r.layer]
        hook = f"blocks.{r.layer}.hook_mlp_out"
        new = block.mlp(block.ln2(base_cache[f"blocks.{r.layer}.hook_resid_mid"] + delta))
    else:
        block = model.blocks[r.layer]
        weight = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[r.kind][r.layer, r.head]
        bias = {"q": model.b_Q, "k": model.b_K, "v": model.b_V}[r.kind][r.layer, r.head]
        hook = f"blocks.{r.layer}.attn.hook_{r.kind}"
        new = base_cache[hook].clone()
        pre = base_cache[f"blocks.{r.layer}.hook_resid_pre"]
        new[:, :, r.head] = block.ln1(pre + delta) @ weight + bias

    def fn(act, hook):
        return new

    return model.run_with_hooks(base_tokens, fwd_hooks=[(hook, fn)])[:, -1]


def reference(w, pairs) -> tuple[np.ndarray, float]:
    """[edge, prompt] logit difference by one hooked forward per edge over the worker's
    prompts (denoising; all prompts of one length, so one batch), and the seconds taken
    (the two cached runs included)."""
    model, n = w.model, w.task.n_prompts
    clean, corrupted = w.task.rows(np.arange(n))
    answer, wrong, rows = w.task.answer, w.task.wrong, torch.arange(n)
    with torch.no_grad():
        start = time.perf_counter()
        _, base_cache = model.run_with_cache(corrupted)
        _, source_cache = model.run_with_cache(clean)
        out = np.zeros((len(pairs), n))
        for i, (s, r) in enumerate(pairs):
            delta = sender_output(model, source_cache, s) - sender_output(model, base_cache, s)
            logits = edge_forward(model, base_cache, delta, r, corrupted)
            out[i] = (logits[rows, answer] - logits[rows, wrong]).numpy()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sample", type=int, default=300, help="edges the reference runs")
    p.add_argument("--per-forward", type=int, default=64, help="edges per batched forward")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", choices=sorted(SHAPES), default="4l")
    p.add_argument("--edges", type=int, default=0, help="patch a random sample (0: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from sweep.config import to_spec
    from sweep.driver import compose_config
    from sweep.edges.graph import GraphShape, edges
    from sweep.engine.edges import deltas, edge_hooks, edge_values
    from sweep.engine.runs import build_block
    from sweep.engine.worker import Worker

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    model_dir = checkpoint(tmp / f"gpt2-{args.shape}", **SHAPES[args.shape])
    task = task_file(tmp / "task.jsonl", 8, model_dir)
    over = ["model=hf", f"model.name={model_dir}", "task=prompts", f"task.path={task}",
            "grid.components=[resid_pre]", "runner.engine=fast"]  # fmt: skip
    w = Worker(to_spec(compose_config(over)))
    model, cfg = w.model, w.model.cfg
    assert set(w.task.lengths.tolist()) == {15}, w.task.lengths
    shape = GraphShape(cfg.n_layers, cfg.n_heads, mlp=True)
    every = edges(shape)
    graph = every
    if args.edges:
        pick = np.random.default_rng(1).choice(len(every), args.edges, replace=False)
        graph = [every[j] for j in sorted(pick)]
    hooks = edge_hooks(cfg.n_layers, True)
    base_hooks = hooks | w.forward.base_hooks(tuple(range(cfg.n_layers)))
    n = w.task.n_prompts

    t0 = time.perf_counter()
    block = build_block(model, w.task, np.arange(n), "corrupted", base_hooks, hooks)
    got = edge_values(w.forward, block, graph, ("logit_diff",), args.per_forward)
    ours = time.perf_counter() - t0
    senders = sorted({s for s, _ in graph}, key=lambda s: s.name)
    with torch.inference_mode():
        changes = deltas(w.forward, block, senders)
    start = {s: int((d.abs().amax(-1) > 0).float().argmax(-1).min()) for s, d in changes.items()}

    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(len(graph), min(args.sample, len(graph)), replace=False))
    ref, theirs = reference(w, [graph[j] for j in sample])
    err = float(np.abs(got[0].numpy()[sample] - ref).max())
    ours_rate = len(graph) / ours
    ref_rate = len(sample) / theirs
    ceiling = flop_ceiling(cfg, graph, start, 15)
    print(f"model: GPT-2, {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
          f"vocab {cfg.d_vocab}; {n} prompts of 15 tokens; {len(graph)} edges; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(
        f"patchsweep: {len(graph)} edges in {ours:.2f} s ({ours_rate:.1f} edges/s, cached "
        f"runs included; {args.per_forward} edges per forward)"
    )
    if len(graph) < len(every):
        print(f"projected: all {len(every)} edges in {len(every) / ours_rate / 60:.1f} min "
              f"({len({r.layer for _, r in graph})} receiver layers and "
              f"{len({r.kind for _, r in graph})} receiver kinds in the sample)")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MB (the reference included)")
    print(
        f"one hooked forward per edge: {len(sample)} edges in {theirs:.2f} s "
        f"({ref_rate:.1f} edges/s)"
    )
    print(
        f"speed-up {ours_rate / ref_rate:.1f}x; FLOP ceiling of the recipe {ceiling[0]:.1f}x "
        f"for the blocks, {ceiling[1]:.1f}x with the logits (measured / ceiling "
        f"{ours_rate / ref_rate / ceiling[1]:.2f}); max |difference| on the sample {err:.2e}"
    )


if __name__ == "__main__":
    main()
