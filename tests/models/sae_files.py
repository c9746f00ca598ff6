"""Random SAEs saved as SAELens saves them (cfg.json and sae_weights.safetensors), and
SAELens's formulas written again in numpy: the reference the reader is checked against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

SHAPES = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"),
}


def save_sae(folder: Path, arch: str, d_in: int, d_sae: int, hook: str, seed: int = 0,
             **cfg: Any) -> Path:  # fmt: skip
    """A random SAE of ``arch`` in SAELens 6's layout (hook under ``metadata``); ``cfg``
    adds or replaces keys of cfg.json (``None`` removes one)."""
    g = torch.Generator().manual_seed(seed)
    shape = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    weights = {n: torch.randn(shape.get(n, (d_sae,)), generator=g) * 0.3 for n in SHAPES[arch]}
    if "threshold" in weights:
        weights["threshold"] = weights["threshold"].abs()
    if "b_enc" in weights:
        weights["b_enc"] = weights["b_enc"] + 0.2  # some latents active on most tokens
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "sae_weights.safetensors"))
    body = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none",
            "reshape_activations": "none", "architecture": arch,
            "metadata": {"hook_name": hook, "model_name": "test", "hook_head_index": None,
                         "sae_lens_version": "6.18.0"}}  # fmt: skip
    if arch == "topk":
        body["k"] = max(1, d_sae // 4)
        body["rescale_acts_by_decoder_norm"] = False
    for key, value in cfg.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    (folder / "cfg.json").write_text(json.dumps(body))
    return folder


def reference_encode(folder: Path, x: np.ndarray) -> np.ndarray:
    """SAELens's encode, in numpy float64, from the files."""
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "cfg.json").read_text())
    w = {
        k: v.astype(np.float64)
        for k, v in load_file(str(folder / "sae_weights.safetensors")).items()
    }
    x = _norm(cfg, x)[0]
    if cfg.get("apply_b_dec_to_input", True):
        x = x - w["b_dec"]
    arch = cfg["architecture"]
    if arch == "gated":
        active = (x @ w["W_enc"] + w["b_gate"]) > 0
        return active * np.maximum(x @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"], 0)
    pre = x @ w["W_enc"] + w["b_enc"]
    if arch == "jumprelu":
        return np.maximum(pre, 0) * (pre > w["threshold"])
    if arch == "topk":
        if cfg.get("rescale_acts_by_decoder_norm"):
            pre = pre * np.linalg.norm(w["W_dec"], axis=-1)
        keep = np.argsort(-pre, axis=-1)[..., : cfg["k"]]
        out = np.zeros_like(pre)
        np.put_along_axis(out, keep, np.maximum(np.take_along_axis(pre, keep, -1), 0), -1)
        return out
    return np.maximum(pre, 0)


def reference_decode(folder: Path, f: np.ndarray, x: np.ndarray) -> np.ndarray:
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "cfg.json").read_text())
    w = {
        k: v.astype(np.float64)
        for k, v in load_file(str(folder / "sae_weights.safetensors")).items()
    }
    if cfg.get("architecture") == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        f = f / np.linalg.norm(w["W_dec"], axis=-1)
    out = f @ w["W_dec"] + w["b_dec"]
    _, undo = _norm(cfg, x)
    return undo(out)


def _norm(cfg: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, Any]:
    norm = cfg.get("normalize_activations", "none")
    if norm == "constant_norm_rescale":
        c = np.sqrt(cfg["d_in"]) / np.linalg.norm(x, axis=-1, keepdims=True)
        return x * c, lambda out: out / c
    if norm == "layer_norm":
        mu = x.mean(-1, keepdims=True)
        std = (x - mu).std(-1, ddof=1, keepdims=True)
        return (x - mu) / (std + 1e-5), lambda out: out * std + mu
    return x, lambda out: out
