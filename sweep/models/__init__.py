"""Loading models: a hub id or local checkpoint, a native config, or the shipped model.

Every model is a TransformerLens ``TransformerBridge`` in eval mode (patching needs
deterministic forwards).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from sweep.errors import ConfigError
from sweep.spec import ModelSpec, NativeModelSpec

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
    device = resolve_device(spec.device)
    dtype = getattr(torch, spec.dtype)
    if isinstance(spec, NativeModelSpec):
        model = _native(spec, device, dtype)
    elif spec.name == "induction":
        from sweep.models import induction

        model = induction.load(device, dtype)
    else:
        model = _pretrained(spec.name, device, dtype)
    if spec.compat:
        model.enable_compatibility_mode()
    model.eval()
    return model


def _native(spec: NativeModelSpec, device: str, dtype: torch.dtype) -> TransformerBridge:
    from sweep.models.native import build_tokenizer

    cfg = dict(spec.native)
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
    except (TypeError, ValueError, KeyError, AssertionError) as e:
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"model.name: could not load {name!r} ({first}). Give a local checkpoint "
            "directory, or a hub id that is in your Hugging Face cache or reachable online"
        ) from e
