"""EAP's receiver gradients through ``_CopiesNorm`` (issue 34): one norm of the residual
forward, the copies' backward written out; the gradients must equal autograd's through
each copy's own norm to the bit, so that stores keep their values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sweep.engine import eap
from sweep.engine.eap import EMBED_HOOK, block_metric, integrated_gradients
from sweep.engine.grids.base import sender_sources
from tests.helpers import mixed_rows, native_prompts, worker, write_task


def _gradients(w, steps: int) -> eap.Gradients:
    block, samples = sender_sources(w, np.arange(w.task.n_prompts), w.forward.base_hooks((0,)))
    metric = block_metric(block, w.metrics)
    base, source = block.base[EMBED_HOOK], samples[0][EMBED_HOOK]
    return integrated_gradients(w.forward, block, base, source, metric, steps, len(w.metrics))


def _model(which: str, tmp_path: Path, gpt2_dir: Path) -> list[str]:
    task = write_task(tmp_path / "t.jsonl", mixed_rows())  # prompts of three lengths
    if which == "native":
        return native_prompts(task, 2)
    return ["model=hf", f"model.name={gpt2_dir}", "task=prompts", f"task.path={task}"]


@pytest.mark.parametrize("which", ["native", "gpt2"])
def test_copies_norm_gradients_equal_each_copys_own_autograd(
    which: str, tmp_path: Path, gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    over = [*_model(which, tmp_path, gpt2_dir), "grid=edges", "intervention=eap",
            "metric.names=[logit_diff,prob]"]  # fmt: skip
    w = worker(over)
    calls = []
    apply = eap._CopiesNorm.apply
    monkeypatch.setattr(eap._CopiesNorm, "apply", lambda *a: calls.append(1) or apply(*a))
    fast = _gradients(w, 2)
    assert len(calls) == 2 * w.shape.n_layers  # every layer, every step took it
    monkeypatch.setattr(eap, "_plain_norm", lambda module, x: None)  # each copy normed
    slow = _gradients(w, 2)
    assert len(calls) == 2 * w.shape.n_layers
    for a, b in zip([*fast.inputs, *fast.logits], [*slow.inputs, *slow.logits], strict=True):
        assert torch.equal(a, b)
    assert max(float(g.abs().max()) for g in fast.inputs) > 0


def test_a_norm_with_a_hook_is_not_written_out() -> None:
    """A hook on the norm (a user's) must run, and a norm of another kind (Llama's, from
    Hugging Face) is not the one written out: those are normed copy by copy."""
    w = worker(["model=native", "grid=edges", "intervention=eap"])
    ln = w.forward.projections(0).norm
    x = torch.zeros(3, int(w.model.cfg.d_model))
    assert eap._plain_norm(ln, x) is not None
    assert eap._plain_norm(ln, x.double()) is None  # weights are float32
    assert eap._plain_norm(torch.nn.LayerNorm(x.shape[1]), x) is None  # Hugging Face's
    handle = ln.hook_scale.register_forward_hook(lambda m, i, o: o)
    try:
        assert eap._plain_norm(ln, x) is None
    finally:
        handle.remove()
