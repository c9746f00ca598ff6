"""auto-circuit's side of ``bench/autocircuit_speed.py``: run in auto-circuit's own
environment (transformer-lens 2, which cannot sit beside patchsweep's 4), on the token ids
patchsweep's task gave, one thread; prints one JSON line of CPU seconds per phase.

    .bench-ac/bin/python bench/autocircuit_side.py TOKENS.json [--repeat 3] [--ig 5]

A random-weight HookedTransformer of the shape in TOKENS.json, made patchable as
auto-circuit's own experiments do (factorized edges, separate q/k/v inputs, the last
position's output); EAP is ``mask_gradient_prune_scores`` (gradients of the logit
difference with respect to the edge masks, corrupted-run sources), EAP-IG the same with
``integrated_grad_samples`` (it interpolates the masks, patchsweep the inputs), the curve
``run_circuits`` with ``PatchType.TREE_PATCH`` at the sizes given (the empty and full
circuits included, as patchsweep runs them). Each timed call is the best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def best(repeat: int, call) -> tuple[float, object]:
    """The least CPU seconds of ``repeat`` calls, and the last call's result."""
    out, least = None, float("inf")
    for _ in range(repeat):
        start = time.process_time()
        out = call()
        least = min(least, time.process_time() - start)
    return least, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tokens")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ig", type=int, default=5)
    a = p.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    import torch

    torch.set_num_threads(1)
    import transformer_lens as tl
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune import run_circuits
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.types import AblationType, PatchType
    from auto_circuit.utils.graph_utils import patchable_model

    data = json.loads(Path(a.tokens).read_text())
    start = time.process_time()
    shape = {**data["shape"], "d_vocab": data["d_vocab"]}
    cfg = tl.HookedTransformerConfig(act_fn="gelu_new", normalization_type="LN", seed=0,
                                     device="cpu", **shape)  # fmt: skip
    model = tl.HookedTransformer(cfg)
    model.set_use_attn_result(True)
    model.set_use_attn_in(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    model.eval()
    for param in model.parameters():
        param.requires_grad = False
    clean, corrupt = torch.tensor(data["clean"]), torch.tensor(data["corrupted"])
    answers = [torch.tensor([x]) for x in data["answer"]]
    wrong = [torch.tensor([x]) for x in data["wrong"]]
    loader = PromptDataLoader(PromptDataset(clean, corrupt, answers, wrong), seq_len=None,
                              diverge_idx=0, batch_size=len(clean), shuffle=False)  # fmt: skip
    cpu = torch.device("cpu")
    pm = patchable_model(model, factorized=True, slice_output="last_seq", seq_len=None,
                         separate_qkv=True, kv_caches=(None,), device=cpu)  # fmt: skip
    setup = time.process_time() - start
    with torch.inference_mode():
        pm(clean)  # the first forward's one-off costs, outside every timed call
    kw = dict(grad_function="logit", answer_function="avg_diff",
              ablation_type=AblationType.RESAMPLE, clean_corrupt="corrupt")  # fmt: skip
    eap_s, scores = best(a.repeat, lambda: mask_gradient_prune_scores(
        pm, loader, None, mask_val=0.0, **kw))  # fmt: skip
    ig_s, _ = best(a.repeat, lambda: mask_gradient_prune_scores(
        pm, loader, None, integrated_grad_samples=a.ig, **kw))  # fmt: skip
    sizes = sorted({0, *(min(s, len(pm.edges)) for s in data["sizes"]), len(pm.edges)})
    curve_s, _ = best(a.repeat, lambda: run_circuits(
        pm, loader, sizes, scores, patch_type=PatchType.TREE_PATCH,
        ablation_type=AblationType.RESAMPLE))  # fmt: skip
    print(json.dumps({"edges": len(pm.edges), "setup_s": setup, "eap_s": eap_s,  # noqa: T201
                      "ig_s": ig_s, "curve_s": curve_s, "circuits": len(sizes)}))  # fmt: skip


if __name__ == "__main__":
    main()
