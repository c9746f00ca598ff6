"""Exact edge patching against one hooked TransformerLens forward per edge
(``tests/edge_reference.py``), per prompt, and the induction circuit it finds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sweep
from sweep.edges.graph import GraphShape, edges, receivers
from sweep.engine.edges import edge_values
from sweep.engine.forward.gpt2 import GPT2Forward
from tests.edge_reference import edge_logit_diffs
from tests.helpers import edge_block, mixed_rows, native_prompts, worker, write_task


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("which", ["native", "gpt2"])
def test_every_edge_equals_one_hooked_forward_per_edge(
    tmp_path: Path, gpt2_dir: Path, direction: str, which: str
) -> None:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    model = native_prompts(task, 2)
    if which == "gpt2":
        model = ["model=hf", f"model.name={gpt2_dir}", "task=prompts", f"task.path={task}"]
    w = worker([*model, "grid.components=[resid_pre]", "runner.engine=fast"])
    fw = w.forward
    assert isinstance(fw, GPT2Forward)
    base_run = "corrupted" if direction == "denoise" else "clean"
    _, all_edges, block = edge_block(w, base_run)
    assert len({r.kind for _, r in all_edges}) == 5  # q, k, v, mlp and logits receivers
    got = edge_values(fw, block, all_edges, ("logit_diff",), per_forward=7)
    want = edge_logit_diffs(w.model, w.task, all_edges, base_run)
    np.testing.assert_allclose(got[0].cpu().numpy(), want, atol=1e-4)
    assert np.abs(want - want.mean(0)).max() > 1e-2  # edges differ: not a constant


def test_the_induction_circuit_is_the_top_edges_of_the_shipped_model() -> None:
    """The previous-token head's output into the induction heads' key inputs: heads found
    from their attention scores on the clean prompts, not by number."""
    w = worker(["grid.components=[resid_pre]", "runner.engine=fast"])  # the shipped model
    shape, graph, block = edge_block(w, "corrupted")
    values = edge_values(w.forward, block, graph, ("logit_diff",))[0]
    corrupted = block.evaluate(("logit_diff",), block.corrupted_logits)[0]
    effect = (values - corrupted[None]).mean(-1)

    with torch.no_grad():
        _, cache = w.model.run_with_cache(block.clean_tokens)
    # BOS r1..r8 r1..r5: the previous-token head attends one back; an induction head at
    # the second r_j attends to the first r_(j+1), seven back.
    prev = cache["blocks.0.attn.hook_pattern"].diagonal(-1, -2, -1).mean((0, -1))
    induction = cache["blocks.1.attn.hook_pattern"].diagonal(-7, -2, -1)[..., 2:].mean((0, -1))
    prev_head = int(prev.argmax())
    heads = [h for h in range(shape.n_heads) if induction[h] > 0.5]  # three of the four
    assert 0 < len(heads) < shape.n_heads
    from_prev = [j for j, (s, _) in enumerate(graph) if s.name == f"a0.h{prev_head}"]
    ranked = sorted(from_prev, key=lambda j: -abs(float(effect[j])))
    assert {graph[j][1].name for j in ranked[:2]} <= {f"a1.h{h}.k" for h in heads}
    overall = effect.abs().argsort(descending=True)[:6].tolist()
    assert set(ranked[:2]) <= set(overall)  # among the six largest edges of the model


EDGE_FAMILIES = ["llama", "mistral", "qwen2", "neox", "gptj"]
"""Every family with a fast forward whose heads write their own share of the residual."""


@pytest.mark.parametrize("name", EDGE_FAMILIES)
def test_every_edge_of_each_family_equals_the_hooked_reference(
    tmp_path: Path, family_dir, name: str
) -> None:
    """Grouped-query k/v receivers (Llama, Mistral, Qwen2), rotary models, and parallel
    blocks whose MLP reads the block's input (GPT-NeoX, GPT-J), in an edge sweep's store."""
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    over = ["model=hf", f"model.name={family_dir(name)}", "task=prompts", f"task.path={task}"]
    path = sweep.run([*over, "grid=edges", "store.prompt_block=2", "runner.memory_mb=2",
                      "runner.progress=false", f"store.path={tmp_path / 'e.zarr'}"])  # fmt: skip
    ds = sweep.open_results(path).load()
    w = worker([*over, "grid.components=[resid_pre]"])
    parallel = name in ("neox", "gptj")
    grouped = name != "neox" and name != "gptj"
    shape = GraphShape(2, 4, n_kv_heads=2 if grouped else 0, parallel=parallel)
    assert [str(r) for r in ds["receiver"].values] == [r.name for r in receivers(shape)]
    assert ("a0.g1.k" in ds["receiver"].values) == grouped
    all_edges = edges(shape)
    want = edge_logit_diffs(w.model, w.task, all_edges, "corrupted", parallel)
    got = ds["edges"].sel(metric="logit_diff")
    values = np.stack([got.sel(receiver=r.name, sender=s.name).values for s, r in all_edges])
    np.testing.assert_allclose(values, want, atol=1e-4)
    assert np.abs(want - want.mean(0)).max() > 1e-2  # edges differ: not a constant
    # In a parallel block a head does not reach its own layer's MLP: no value there.
    assert got.sel(receiver="m0", sender="a0.h1").isnull().all() == parallel


def test_gemma2_edges_are_refused_in_one_line(tmp_path: Path, family_dir) -> None:
    from sweep.errors import ConfigError

    task = write_task(tmp_path / "t.jsonl", mixed_rows())
    with pytest.raises(ConfigError, match=r"grid=edges: .*Gemma 2 normalises the sum"):
        sweep.run(["model=hf", f"model.name={family_dir('gemma2')}", "task=prompts",
                   f"task.path={task}", "grid=edges",
                   f"store.path={tmp_path / 'e.zarr'}"])  # fmt: skip
    assert not (tmp_path / "e.zarr").exists()
