"""One hooked TransformerLens forward per edge: the independent reference for exact edge
patching (``sweep.engine.edges``), used by the tests and ``bench/edge_speed.py``.

The receiver's input is the base run's plus the sender's change (source output - base
output); the receiver's new value is computed from the model's own modules, set by a hook,
and everything after it runs through the hooked model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sweep.edges.graph import Node


def sender_output(model: Any, cache: Any, s: Node) -> torch.Tensor:
    """What a sender wrote into the residual stream, [batch, pos, d_model]."""
    if s.kind == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if s.kind == "mlp":
        return cache[f"blocks.{s.layer}.hook_mlp_out"]
    return cache[f"blocks.{s.layer}.attn.hook_z"][:, :, s.head] @ model.W_O[s.layer, s.head]


def edge_forward(
    model: Any, base_cache: Any, delta: torch.Tensor, r: Node, base_tokens: torch.Tensor
) -> torch.Tensor:
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

    def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return new

    return model.run_with_hooks(base_tokens, fwd_hooks=[(hook, fn)])[:, -1]


def edge_logit_diffs(model: Any, task: Any, edges: list[tuple[Node, Node]], base_run: str) -> Any:
    """[edge, prompt] logit difference, one unpadded forward per edge and prompt, on a
    tokenized task's prompts."""
    out = np.zeros((len(edges), task.n_prompts))
    with torch.no_grad():
        for p, ex in enumerate(task.examples):
            clean, corrupted = model.to_tokens(ex.clean), model.to_tokens(ex.corrupted)
            base, source = (corrupted, clean) if base_run == "corrupted" else (clean, corrupted)
            _, base_cache = model.run_with_cache(base)
            _, source_cache = model.run_with_cache(source)
            answer, wrong = int(task.answer[p]), int(task.wrong[p])
            for j, (s, r) in enumerate(edges):
                delta = sender_output(model, source_cache, s) - sender_output(model, base_cache, s)
                logits = edge_forward(model, base_cache, delta, r, base)[0]
                out[j, p] = float(logits[answer] - logits[wrong])
    return out
