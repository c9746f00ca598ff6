"""One hooked TransformerLens forward per edge: the independent reference for exact edge
patching (``sweep.engine.edges``), used by the tests and ``bench/edge_speed.py``.

Written with the model's hooks only, so it holds for every family: a head's output is
what the attention output becomes when only that head's z is kept (less the output with
none); the receiver's new value is what the model's own block computes when the residual
it reads is the base run's plus the sender's change (a first hooked run), set into the
base run by a hook (a second), and everything after it runs through the hooked model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sweep.edges.graph import Node


def sender_output(model: Any, tokens: torch.Tensor, cache: Any, s: Node) -> torch.Tensor:
    """What a sender wrote into the residual stream of a run, [batch, pos, d_model]."""
    if s.kind == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if s.kind == "mlp":
        return cache[f"blocks.{s.layer}.hook_mlp_out"]
    z, out = f"blocks.{s.layer}.attn.hook_z", f"blocks.{s.layer}.hook_attn_out"

    def keep(only: int | None) -> torch.Tensor:
        seen = {}

        def z_hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            kept = torch.zeros_like(act)
            if only is not None:
                kept[:, :, only] = cache[z][:, :, only]
            return kept

        def record(act: torch.Tensor, hook: Any) -> None:
            seen["out"] = act.clone()

        model.run_with_hooks(tokens, fwd_hooks=[(z, z_hook), (out, record)])
        return seen["out"]

    return keep(s.head) - keep(None)


def edge_forward(
    model: Any,
    base_tokens: torch.Tensor,
    delta: torch.Tensor,
    r: Node,
    parallel: bool,
    before: list | None = None,
    every_position: bool = False,
) -> torch.Tensor:
    """Logits [batch, vocab] at the last position of the base prompts, with only ``r``
    reading ``delta`` more. ``before``: hooks every run takes first (an input replaced).
    ``every_position``: [batch, pos, vocab]."""
    before = before or []
    at = slice(None) if every_position else -1
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    if r.kind == "logits":
        return model.run_with_hooks(base_tokens, fwd_hooks=[*before, (last, _add(delta))])[:, at]
    if r.kind == "mlp":
        reads = "hook_resid_pre" if parallel else "hook_resid_mid"
        where, value = f"blocks.{r.layer}.{reads}", f"blocks.{r.layer}.hook_mlp_out"
    else:
        where, value = f"blocks.{r.layer}.hook_resid_pre", f"blocks.{r.layer}.attn.hook_{r.kind}"
    seen = {}

    def record(act: torch.Tensor, hook: Any) -> None:
        seen["new"] = act.clone()

    model.run_with_hooks(base_tokens, fwd_hooks=[*before, (where, _add(delta)), (value, record)])

    def set_receiver(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act = act.clone()
        if r.kind == "mlp":
            return seen["new"]
        act[:, :, r.head] = seen["new"][:, :, r.head]
        return act

    return model.run_with_hooks(base_tokens, fwd_hooks=[*before, (value, set_receiver)])[:, at]


def _add(delta: torch.Tensor) -> Any:
    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act + delta

    return hook


def edge_logit_diffs(
    model: Any,
    task: Any,
    edges: list[tuple[Node, Node]],
    base_run: str,
    parallel: bool = False,
    position: int | None = None,
    score: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Any:
    """[edge, prompt] logit difference, one unpadded forward per edge and prompt, on a
    tokenized task's prompts. ``position``: the receiver reads the sender's change at that
    token only (negative: from each prompt's end; NaN where a prompt has no such token).
    ``score``: another metric, of prompt ``p``'s logits [pos, vocab] at every position."""
    out = np.zeros((len(edges), task.n_prompts))
    with torch.no_grad():
        for p in range(task.n_prompts):
            clean, corrupted = task.rows(np.array([p]))
            n = int(task.lengths[p])
            clean, corrupted = clean[:, :n], corrupted[:, :n]
            base, source = (corrupted, clean) if base_run == "corrupted" else (clean, corrupted)
            _, base_cache = model.run_with_cache(base)
            _, source_cache = model.run_with_cache(source)
            answer, wrong = (int(t[p]) if score is None else -1 for t in (task.answer, task.wrong))
            n = base.shape[1]
            at = None if position is None else position % n if -n <= position < n else -1
            if at == -1:
                out[:, p] = np.nan
                continue
            change: dict[str, torch.Tensor] = {}
            for j, (s, r) in enumerate(edges):
                if s.name not in change:
                    change[s.name] = sender_output(model, source, source_cache, s) - sender_output(
                        model, base, base_cache, s
                    )
                    if at is not None:
                        keep = torch.zeros_like(change[s.name])
                        keep[:, at] = change[s.name][:, at]
                        change[s.name] = keep
                logits = edge_forward(model, base, change[s.name], r, parallel,
                                      every_position=score is not None)[0]  # fmt: skip
                value = logits[answer] - logits[wrong] if score is None else score(logits, p)
                out[j, p] = float(value)
    return out


def sender_hooks(model: Any) -> list[str]:
    """The hooks senders' outputs are made of: the embedding, every z and MLP output."""
    out = ["blocks.0.hook_resid_pre"]
    for i in range(int(model.cfg.n_layers)):
        out.append(f"blocks.{i}.attn.hook_z")
        if not getattr(model.cfg, "attn_only", False):
            out.append(f"blocks.{i}.hook_mlp_out")
    return out


def position_means(model: Any, task: Any) -> dict[str, torch.Tensor]:
    """Each sender hook's mean over the task's clean prompts at each position (a prompt
    counts at the positions it reaches), [pos, ...]: what mean ablation replaces with."""
    hooks = sender_hooks(model)
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(int(task.lengths.max()))
    with torch.no_grad():
        for p in range(task.n_prompts):
            n = int(task.lengths[p])
            _, cache = model.run_with_cache(task.rows(np.array([p]))[0][:, :n])
            counts[:n] += 1
            for h in hooks:
                act = cache[h][0]
                if h not in sums:
                    sums[h] = torch.zeros(len(counts), *act.shape[1:])
                sums[h][:n] += act
    return {h: v / counts.view(-1, *[1] * (v.dim() - 1)) for h, v in sums.items()}


def ablated_cache(model: Any, n: int, ablation: str, means: dict | None) -> dict[str, Any]:
    """The sender hooks' ablated values for one prompt of ``n`` tokens, [1, n, ...]."""
    assert means is not None
    cut = {h: v[:n][None] for h, v in means.items()}
    return cut if ablation == "mean" else {h: torch.zeros_like(v) for h, v in cut.items()}


def eap_logit_diffs(
    model: Any,
    task: Any,
    edges: list[tuple[Node, Node]],
    base_run: str,
    steps: int = 1,
    ablation: str = "patch",
    score: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Any:
    """[edge, prompt] EAP(-IG) scores of the logit difference by autograd through the
    hooked reference: d/de of the logit difference when only the receiver reads ``e`` times
    the sender's change, at e = 0, averaged over runs from the base input moved k/steps of
    the way to the source input (k = 0 .. steps - 1); one unpadded forward pair and one
    backward per edge, prompt and step. ``ablation`` ``zero`` or ``mean``: the source is
    the clean run's senders ablated (their mean at each position over the clean prompts),
    its input the ablated embedding. ``score``: another metric, of prompt ``p``'s logits
    [pos, vocab] at every position."""
    embed = "blocks.0.hook_resid_pre"
    means = position_means(model, task) if ablation != "patch" else None
    out = np.zeros((len(edges), task.n_prompts))
    for p in range(task.n_prompts):
        clean, corrupted = (t[:, : int(task.lengths[p])] for t in task.rows(np.array([p])))
        base, source = (corrupted, clean) if base_run == "corrupted" else (clean, corrupted)
        with torch.no_grad():
            _, base_cache = model.run_with_cache(base)
            if ablation == "patch":
                _, source_cache = model.run_with_cache(source)
            else:
                source_cache = ablated_cache(model, base.shape[1], ablation, means)
            change = {s.name: sender_output(model, source, source_cache, s)
                      - sender_output(model, base, base_cache, s) for s, _ in edges}  # fmt: skip
        answer, wrong = (int(t[p]) if score is None else -1 for t in (task.answer, task.wrong))
        for k in range(steps):
            moved = base_cache[embed] + (k / steps) * (source_cache[embed] - base_cache[embed])

            def start(act: torch.Tensor, hook: Any, moved: torch.Tensor = moved) -> torch.Tensor:
                return moved.clone()

            for j, (s, r) in enumerate(edges):
                e = torch.zeros((), requires_grad=True)
                with torch.enable_grad():
                    logits = edge_forward(model, base, e * change[s.name], r, False,
                                          [(embed, start)], score is not None)[0]  # fmt: skip
                    value = logits[answer] - logits[wrong] if score is None else score(logits, p)
                    (grad,) = torch.autograd.grad(value, e)
                out[j, p] += float(grad) / steps
    return out


def path_forward(
    model: Any,
    base: Any,
    source: Any,
    layer: int,
    head: int,
    receivers: list[Node],
    position: int | None = None,
) -> torch.Tensor:
    """Logits [batch, vocab] of the IOI paper's path patching, in two hooked runs: the
    sender head's z from the source run (at token ``position`` only, when given) and every
    other head's frozen at the base run's (MLPs and norms recompute), recording the
    receivers' q, k or v; then the base run with only those patched in. The logits
    receiver (the direct path) reads pass one's output."""
    base_tokens, base_cache = base
    source_cache = source
    n_layers = model.cfg.n_layers
    recorded: dict[str, torch.Tensor] = {}

    def freeze(i: int) -> Any:
        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = base_cache[f"blocks.{i}.attn.hook_z"].clone()
            at = slice(None) if position is None else slice(position, position + 1)
            if i == layer:
                out[:, at, head] = source_cache[f"blocks.{i}.attn.hook_z"][:, at, head]
            return out

        return hook

    def record(name: str) -> Any:
        def hook(act: torch.Tensor, hook: Any) -> None:
            recorded[name] = act.clone()

        return hook

    inputs = {f"blocks.{r.layer}.attn.hook_{r.kind}" for r in receivers if r.kind != "logits"}
    hooks = [(f"blocks.{i}.attn.hook_z", freeze(i)) for i in range(layer, n_layers)]
    first = model.run_with_hooks(base_tokens, fwd_hooks=hooks + [(n, record(n)) for n in inputs])
    if all(r.kind == "logits" for r in receivers):
        return first[:, -1]

    def patch(r: Node) -> Any:
        name = f"blocks.{r.layer}.attn.hook_{r.kind}"

        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act = act.clone()
            act[:, :, r.head] = recorded[name][:, :, r.head]
            return act

        return (name, hook)

    return model.run_with_hooks(base_tokens, fwd_hooks=[patch(r) for r in receivers])[:, -1]


def path_logit_diffs(
    model: Any,
    task: Any,
    senders: list[tuple[int, int]],
    receivers: list[Node],
    base_run: str,
    position: int | None = None,
) -> Any:
    """[sender, prompt] logit difference of each sender head (layer, head) path-patched
    into ``receivers``, one pair of unpadded hooked runs per sender and prompt; with
    ``position`` (negative: from each prompt's end), the sender at that token only (NaN
    where a prompt has none)."""
    out = np.zeros((len(senders), task.n_prompts))
    with torch.no_grad():
        for p in range(task.n_prompts):
            clean, corrupted = (t[:, : int(task.lengths[p])] for t in task.rows(np.array([p])))
            base, source = (corrupted, clean) if base_run == "corrupted" else (clean, corrupted)
            _, base_cache = model.run_with_cache(base)
            _, source_cache = model.run_with_cache(source)
            answer, wrong = int(task.answer[p]), int(task.wrong[p])
            n = base.shape[1]
            at = None if position is None else position % n if -n <= position < n else -1
            if at == -1:
                out[:, p] = np.nan
                continue
            for j, (layer, head) in enumerate(senders):
                logits = path_forward(
                    model, (base, base_cache), source_cache, layer, head, receivers, at
                )[0]
                out[j, p] = float(logits[answer] - logits[wrong])
    return out


def ablated_edge_logit_diffs(
    model: Any, task: Any, edges: list[tuple[Node, Node]], kind: str, donors: Any = None
) -> Any:
    """[edge, prompt] logit difference with each edge's sender output, as its receiver
    reads it in the clean run, replaced by zero, by its mean over the task's clean prompts
    at each position (prompts of one length), or by each donor prompt's (``donors``
    [sample, prompt]; values averaged over samples)."""
    n_prompts = task.n_prompts
    with torch.no_grad():
        tokens = [task.rows(np.array([p]))[0][:, : int(task.lengths[p])] for p in range(n_prompts)]
        caches = [model.run_with_cache(t)[1] for t in tokens]
        senders = {s.name: s for s, _ in edges}
        outputs = {
            name: [sender_output(model, t, c, s) for t, c in zip(tokens, caches, strict=True)]
            for name, s in senders.items()
        }
        out = np.zeros((len(edges), n_prompts))
        for p in range(n_prompts):
            answer, wrong = int(task.answer[p]), int(task.wrong[p])
            for j, (s, r) in enumerate(edges):
                base = outputs[s.name][p]
                if kind == "zero":
                    sources = [torch.zeros_like(base)]
                elif kind == "mean":
                    sources = [torch.stack(outputs[s.name]).mean(0)]
                else:
                    sources = [outputs[s.name][int(d)] for d in donors[:, p]]
                values = []
                for src in sources:
                    logits = edge_forward(model, tokens[p], src - base, r, False)[0]
                    values.append(float(logits[answer] - logits[wrong]))
                out[j, p] = np.mean(values)
    return out
