"""Load a TransformerBridge from a ModelSpec: hub id, local checkpoint, or native config."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from sweep import induction
from sweep.errors import ConfigError
from sweep.spec import ModelSpec
from sweep.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"model.device: {device!r} but no CUDA device is visible; use cpu or auto"
        )
    return device


def load_model(spec: ModelSpec) -> TransformerBridge:
    """Build the model in eval mode; patching needs deterministic forwards."""
    device = resolve_device(spec.device)
    dtype = getattr(torch, spec.dtype)
    if spec.name == "native":
        model = _native(spec, device, dtype)
    elif spec.name == "induction":
        model = induction.load(device, dtype)
    else:
        model = _pretrained(spec.name, device, dtype)
    if spec.compat:
        model.enable_compatibility_mode()
    model.eval()
    return model


def _native(spec: ModelSpec, device: str, dtype: torch.dtype) -> TransformerBridge:
    cfg = spec.native_dict()
    tokenizer = build_tokenizer()
    cfg.setdefault("d_vocab", len(tokenizer))
    if cfg["d_vocab"] < len(tokenizer):
        raise ConfigError(
            f"model.native.d_vocab: {cfg['d_vocab']} is smaller than the tokenizer's "
            f"{len(tokenizer)} tokens; leave it out to use the tokenizer's size"
        )
    try:
        return TransformerBridge.boot_native(  # type: ignore[attr-defined]
            cfg, tokenizer=tokenizer, device=device, dtype=dtype
        )
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"model.native: TransformerLens rejected this config: {e}") from e


def _pretrained(name: str, device: str, dtype: torch.dtype) -> TransformerBridge:
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(
                f"model.name: directory {local} has no config.json (not a checkpoint)"
            )
        name = str(local.resolve())
    try:
        return TransformerBridge.boot_transformers(name, device=device, dtype=dtype)
    except OSError as e:
        raise ConfigError(
            f"model.name: could not load {name!r} ({e}). Give a local checkpoint directory, "
            "or a hub id that is in your Hugging Face cache or reachable online"
        ) from e
