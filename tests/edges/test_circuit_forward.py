"""The circuit forward (``sweep.engine.circuit_forward``): every edge kept is the base
run, none kept is the ablated run, and all but one kept is that one edge patched alone
(the exact edge forward, itself checked against TransformerLens hooks), on a native model
with MLPs and a small GPT-2 checkpoint, a Llama (grouped-query) and a GPT-NeoX (parallel
blocks) checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep.edges.graph import edges
from sweep.engine.circuit_forward import circuit_logits
from sweep.engine.eap import EMBED_HOOK
from sweep.engine.edges import edge_hooks, edge_values, sender_outputs
from sweep.engine.runs import build_block
from sweep.engine.worker import model_shape
from tests.helpers import mixed_rows, native_prompts, worker, write_task


@pytest.mark.parametrize("which", ["native", "gpt2", "llama", "neox"])
def test_full_empty_and_one_edge_out(
    tmp_path: Path, gpt2_dir: Path, family_dir, which: str
) -> None:
    """Llama: grouped-query keys and values; GPT-NeoX: parallel attention and MLP."""
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    model = native_prompts(task, 2)
    if which != "native":
        where = gpt2_dir if which == "gpt2" else family_dir(which)
        model = ["model=hf", f"model.name={where}", "task=prompts", f"task.path={task}"]
    w = worker([*model, "grid.components=[resid_pre]", "runner.engine=fast"])
    fw = w.forward
    shape = replace(model_shape(w.model), parallel=fw.PARALLEL).graph
    graph = edges(shape)
    hooks = edge_hooks(shape.n_layers, shape.mlp)
    base_hooks = hooks | fw.base_hooks(tuple(range(shape.n_layers)))
    # The circuit runs on the clean prompts; an ablated edge carries the corrupted output.
    block = build_block(w.model, w.task, np.arange(w.task.n_prompts), "clean", base_hooks, hooks)
    senders = {s.name: s for s, _ in graph}
    with torch.inference_mode():
        ablated = {name: sender_outputs(fw, block.source, s) for name, s in senders.items()}

        def metric(keep: list[bool]) -> np.ndarray:
            logits = circuit_logits(fw, block.base[EMBED_HOOK], block.last, graph, keep, ablated)
            return block.evaluate(("logit_diff",), logits)[0].cpu().numpy()

        clean = block.evaluate(("logit_diff",), block.clean_logits)[0].cpu().numpy()
        corrupted = block.evaluate(("logit_diff",), block.corrupted_logits)[0].cpu().numpy()
        np.testing.assert_allclose(metric([True] * len(graph)), clean, atol=1e-4)
        np.testing.assert_allclose(metric([False] * len(graph)), corrupted, atol=1e-4)
        assert np.abs(clean - corrupted).max() > 1e-2  # the two ends differ
        picks = np.random.default_rng(0).choice(len(graph), 12, replace=False)
        alone = edge_values(fw, block, [graph[j] for j in picks], ("logit_diff",))[0]
        for k, j in enumerate(picks):
            keep = [True] * len(graph)
            keep[j] = False
            np.testing.assert_allclose(metric(keep), alone[k].cpu().numpy(), atol=1e-4)
