"""Sparse autoencoders in SAELens's on-disk format, read without SAELens.

SAELens 6 imports ``transformer_lens.HookedTransformer``, which TransformerLens 4 removed,
so its folders are read directly: ``cfg.json`` (d_in, d_sae, architecture, the hook,
normalisation) and ``sae_weights.safetensors``. The four architectures SAELens ships are
supported, with its own formulas (``sae_lens/saes/*.py``, 6.x; older top-level configs
too). ``read_config`` is torch-free (it reads the safetensors header), so a bad folder is
refused before any model loads; ``Sae`` holds the tensors and does the math.

A latent's change reaches the model through the decoder only: the activation at the hook
is ``decode(latents) + error``, with the error term kept, so changing latents by ``df``
changes the activation by ``decode(f + df) - decode(f)`` (``Sae.delta``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.components import SAE_SUFFIX
from sweep.errors import ConfigError

CFG, WEIGHTS, SCALER = "cfg.json", "sae_weights.safetensors", "activation_scaler.json"

PARAMS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"),
}
"""The tensors each architecture's ``sae_weights.safetensors`` holds."""

NORMALISATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")

HOOK_STAGES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
               "hook_mlp_out")  # fmt: skip
"""Where an SAE may read: the residual stream and the attention and MLP outputs, each
``[pos, d_model]`` (SAEs on ``hook_z`` are not supported yet)."""


@dataclass(frozen=True)
class SaeConfig:
    """What ``cfg.json`` and the weights' header say, checked."""

    path: str
    architecture: str
    d_in: int
    d_sae: int
    hook: str
    """The TransformerLens hook it reads, ``blocks.{layer}.hook_resid_pre``."""
    apply_b_dec_to_input: bool = True
    normalize: str = "none"
    k: int = 0
    """TopK: latents kept per token."""
    rescale_by_decoder_norm: bool = False
    scaling_factor: float = 1.0
    """``expected_average_only_in`` checkpoints: inputs are scaled by it, outputs undone."""

    @property
    def layer(self) -> int:
        return int(self.hook.split(".")[1])

    def digest(self) -> str:
        """The config's and the weights' bytes, hashed: an SAE compares by content."""
        files = [Path(self.path) / n for n in (CFG, WEIGHTS, SCALER)]
        stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files
                      if f.is_file())  # fmt: skip
        return _digest(stamp)

    @property
    def stage(self) -> str:
        return self.hook.split(".", 2)[2]


@functools.lru_cache(maxsize=32)
def _digest(stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Hashed once per process for files of one size and time (weights run to GBs)."""
    h = hashlib.sha256()
    for name, _, _ in stamp:
        with open(name, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16]


def _fail(path: Any, why: str) -> ConfigError:
    return ConfigError(f"sae.path: {path}: {why}")


def read_config(path: str | Path) -> SaeConfig:
    """The SAE folder's config, checked against its weights' shapes; a mistake is one
    line naming the folder and what to change."""
    folder = Path(path).expanduser()
    if not (folder / CFG).is_file():
        raise _fail(path, f"no {CFG} here; give a folder SAELens saved (cfg.json and {WEIGHTS})")
    if not (folder / WEIGHTS).is_file():
        raise _fail(path, f"no {WEIGHTS} beside {CFG}")
    try:
        cfg = json.loads((folder / CFG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, f"{CFG} is not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise _fail(path, f"{CFG} holds {type(cfg).__name__}, not an object")
    meta: dict[str, Any] = cfg["metadata"] if isinstance(cfg.get("metadata"), dict) else {}
    arch = str(cfg.get("architecture", "standard"))
    if cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk":  # SAELens < 6
        arch = "topk"
    if arch not in PARAMS:
        raise _fail(path, f"architecture {arch!r} is not supported; one of {', '.join(PARAMS)}")
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if not isinstance(hook, str) or not hook:
        raise _fail(path, f"{CFG} names no hook (metadata.hook_name)")
    parts = hook.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise _fail(path, f"hook {hook!r} is not one of a block's (blocks.LAYER.STAGE)")
    if parts[2] not in HOOK_STAGES:
        raise _fail(path, f"hook {hook!r}: SAEs on {', '.join(HOOK_STAGES)} are supported")
    if meta.get("hook_head_index", cfg.get("hook_head_index")) is not None:
        raise _fail(path, "SAEs on one head's output (hook_head_index) are not supported")
    norm = cfg.get("normalize_activations", "none")
    norm = {True: "expected_average_only_in", False: "none", None: "none"}.get(norm, norm)
    if norm not in NORMALISATIONS:
        raise _fail(path, f"normalize_activations {norm!r} is not one of {NORMALISATIONS}")
    scale = 1.0
    if norm == "expected_average_only_in" and (folder / SCALER).is_file():
        scale = float(json.loads((folder / SCALER).read_text())["scaling_factor"])
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k", 0))
    try:
        d_in, d_sae, k = int(cfg["d_in"]), int(cfg["d_sae"]), int(k or 0)
    except (KeyError, TypeError, ValueError):
        raise _fail(path, f"{CFG} needs whole numbers d_in and d_sae") from None
    if arch == "topk" and not 0 < k <= d_sae:
        raise _fail(path, f"a topk SAE needs k between 1 and d_sae={d_sae}, not {k}")
    _check_weights(path, folder / WEIGHTS, arch, d_in, d_sae)
    return SaeConfig(
        str(folder), arch, d_in, d_sae, hook,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), normalize=norm, k=k,
        rescale_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        scaling_factor=scale,
    )  # fmt: skip


def _check_weights(path: Any, file: Path, arch: str, d_in: int, d_sae: int) -> None:
    """The weights' shapes, from the safetensors header (no tensor is read)."""
    try:
        with file.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, MemoryError, OSError):
        raise _fail(path, f"{WEIGHTS} is not a safetensors file") from None
    want = {"W_enc": [d_in, d_sae], "W_dec": [d_sae, d_in], "b_dec": [d_in]}
    for name in PARAMS[arch]:
        if name not in header:
            raise _fail(path, f"{WEIGHTS} has no {name!r}, which a {arch} SAE needs")
        shape = header[name]["shape"]
        if shape != want.get(name, [d_sae]):
            raise _fail(path, f"{name} is {shape}, not {want.get(name, [d_sae])} "
                              f"(d_in={d_in}, d_sae={d_sae} in {CFG})")  # fmt: skip


def model_size(model: Any) -> tuple[int, int] | None:
    """(layers, d_model) of the model a ``ModelSpec`` names, read without loading it: a
    native config, the shipped model's training record, a checkpoint's config.json;
    None for a hub id (checked once the model has loaded)."""
    native = getattr(model, "native", None)
    if isinstance(native, dict):
        return int(native.get("n_layers", 0)), int(native.get("d_model", 0))
    if model.name == "induction":
        file = Path(__file__).resolve().parent.parent / "data" / "induction" / "training.json"
    else:
        file = Path(model.name).expanduser() / "config.json"
    try:
        cfg = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    cfg = cfg.get("config", cfg)
    layers = next((cfg[k] for k in ("n_layers", "num_hidden_layers", "n_layer") if k in cfg), None)
    width = next((cfg[k] for k in ("d_model", "hidden_size", "n_embd") if k in cfg), None)
    return (int(layers), int(width)) if layers and width else None


def check_fits(cfg: SaeConfig, n_layers: int, d_model: int) -> None:
    """The SAE reads a layer the model has, with the model's width (one line if not)."""
    if cfg.layer >= n_layers:
        raise _fail(cfg.path, f"reads {cfg.hook}, which this model does not have ({n_layers} "
                              "layers); give an SAE trained on this model")  # fmt: skip
    if cfg.d_in != d_model:
        raise _fail(cfg.path, f"reads vectors of {cfg.d_in} (d_in), this model's {cfg.stage} "
                              f"has {d_model}; give an SAE trained on this model")  # fmt: skip


class Sae:
    """An SAE's tensors on a device, and SAELens's encode and decode."""

    def __init__(self, cfg: SaeConfig, device: Any = "cpu", dtype: Any = None) -> None:
        import torch
        from safetensors.torch import load_file

        self.cfg = cfg
        weights = load_file(str(Path(cfg.path) / WEIGHTS), device=str(device))
        dtype = dtype or torch.float32
        self.w = {name: weights[name].to(dtype) for name in PARAMS[cfg.architecture]}
        if cfg.rescale_by_decoder_norm:
            self.dec_norm = self.w["W_dec"].norm(dim=-1)
        self.columns: Any = None
        """The ids of the latents the cached runs hold, sorted (``keep``); None: all."""
        self.chunk = 4096
        """Tokens encoded at once: an encoding takes ``d_sae`` values a token before the
        kept columns are picked (``budget``)."""

    def keep(self, ids: Any) -> None:
        """Hold only these latents' columns in the cached runs (None: all): a sweep over
        ``top:N`` of a 131k-latent SAE caches N values a token, not 131k."""
        import torch

        device = self.w["W_dec"].device
        self.columns = None if ids is None else torch.as_tensor(sorted(ids), device=device)

    def budget(self, nbytes: float) -> None:
        """Encode as many tokens at once as ``nbytes`` holds (their pre-activations, the
        latents and what the architecture's formula makes beside them)."""
        per_token = 4 * self.cfg.d_sae * self.w["W_dec"].element_size()
        self.chunk = max(1, int(nbytes // per_token))

    def ids(self, columns: Any) -> Any:
        """The latent ids of kept columns."""
        return columns if self.columns is None else self.columns[columns]

    def encode_kept(self, x: Any) -> Any:
        """The kept latents ``[..., kept]`` of activations ``[..., d_in]``, ``chunk`` tokens
        at a time: each token's full encoding is made and dropped chunk by chunk."""
        import torch

        flat = x.reshape(-1, x.shape[-1])
        width = self.cfg.d_sae if self.columns is None else len(self.columns)
        out = torch.empty(flat.shape[0], width, dtype=self.w["W_dec"].dtype, device=x.device)
        # Written in place, one chunk after another, no name holding a chunk's full
        # encoding: each is freed before the next is made, and the allocator reuses its
        # memory (kept pieces allocated between chunks would split it, and the heap grow).
        for i in range(0, flat.shape[0], self.chunk):
            f = self.encode(flat[i : i + self.chunk])
            out[i : i + self.chunk] = f if self.columns is None else f[:, self.columns]
            del f
        return out.reshape(*x.shape[:-1], width)

    def encode_sum(self, x: Any) -> Any:
        """Every latent summed over the rows of ``x`` [T, d_in], float32, ``chunk`` at a time."""
        import torch

        total = torch.zeros(self.cfg.d_sae, device=x.device)
        for i in range(0, x.shape[0], self.chunk):
            total += self.encode(x[i : i + self.chunk]).float().sum(0)
        return total

    def _norm_in(self, x: Any) -> tuple[Any, Any]:
        """The normalised input and what undoes it on the output: ``out * a + b``."""
        norm = self.cfg.normalize
        if norm == "constant_norm_rescale":
            c = math.sqrt(self.cfg.d_in) / x.norm(dim=-1, keepdim=True)
            return x * c, (1 / c, 0.0)
        if norm == "layer_norm":
            mu = x.mean(-1, keepdim=True)
            std = (x - mu).std(-1, keepdim=True)
            return (x - mu) / (std + 1e-5), (std, mu)
        s = self.cfg.scaling_factor
        return x * s, (1 / s, 0.0)

    def encode(self, x: Any) -> Any:
        """Latents ``[..., d_sae]`` of activations ``[..., d_in]``."""
        import torch

        w = self.w
        x, _ = self._norm_in(x)
        if self.cfg.apply_b_dec_to_input:
            x = x - w["b_dec"]
        arch = self.cfg.architecture
        if arch == "gated":
            active = (x @ w["W_enc"] + w["b_gate"]) > 0
            mag = torch.relu(x @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
            return active * mag
        pre = x @ w["W_enc"] + w["b_enc"]
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > w["threshold"])
        if arch == "topk":
            if self.cfg.rescale_by_decoder_norm:
                pre = pre * self.dec_norm
            vals, idx = torch.topk(pre, self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))
        return torch.relu(pre)

    def _linear(self, f: Any) -> Any:
        if self.cfg.rescale_by_decoder_norm:
            f = f / self.dec_norm
        return f @ self.w["W_dec"]

    def decode(self, f: Any, x: Any) -> Any:
        """The reconstruction of ``x`` from its latents ``f`` (the output's normalisation
        is undone with ``x``'s own statistics, as SAELens does)."""
        _, (a, b) = self._norm_in(x)
        return (self._linear(f) + self.w["b_dec"]) * a + b

    def change(self, df: Any, latent: Any, x: Any) -> Any:
        """How ``x`` [R, ..., d_in] changes when latent ``latent[r]`` (an id) of each row
        changes by ``df`` [R, ...] (the error term kept): one decoder row each, ``delta``
        for one latent per row."""
        row = self.w["W_dec"][latent]
        if self.cfg.rescale_by_decoder_norm:
            row = row / self.dec_norm[latent][:, None]
        row = row.reshape(row.shape[0], *[1] * (x.ndim - 2), row.shape[-1])
        _, (a, _) = self._norm_in(x)
        return df[..., None].to(x.dtype) * row.to(x.dtype) * a

    def latent_grad(self, grad: Any, x: Any) -> Any:
        """``d metric / d latent`` [..., kept] of the kept latents from ``d metric / d x``
        [..., d_in]: a latent moves ``x`` along its decoder row (scaled out of the
        normalisation)."""
        _, (a, _) = self._norm_in(x)
        dec = self.w["W_dec"]
        if self.cfg.rescale_by_decoder_norm:
            dec = dec / self.dec_norm[:, None]
        if self.columns is not None:
            dec = dec[self.columns]
        return (grad * a) @ dec.T.to(grad.dtype)

    def delta(self, df: Any, x: Any) -> Any:
        """How the activation ``x`` changes when its latents change by ``df`` (the error
        term kept): ``decode(f + df) - decode(f)``, linear in ``df``."""
        _, (a, _) = self._norm_in(x)
        return self._linear(df) * a


ATTRIBUTE = "_patchsweep_saes"
"""Where the model keeps its SAEs, by hook: the forwards and cached runs find them there."""


def attach(model: Any, saes: dict[str, Sae]) -> None:
    object.__setattr__(model, ATTRIBUTE, saes)


def attached(model: Any) -> dict[str, Sae]:
    return getattr(model, ATTRIBUTE, {})


def encode_hooks(
    model: Any, names: set[str], cache: dict[str, Any]
) -> list[tuple[str, Callable[[Any, Any], None]]]:
    """Hooks that put the latents ``names`` ask for into ``cache`` (names of SAEs the
    model does not have are left out, as hooks it does not have are)."""
    saes = attached(model)
    hooks = []
    for name in sorted(names):
        hook = name.removesuffix(SAE_SUFFIX)
        if name.endswith(SAE_SUFFIX) and hook in saes:
            hooks.append((hook, _encode_into(cache, name, saes[hook])))
    return hooks


def _encode_into(cache: dict[str, Any], name: str, sae: Sae) -> Callable[[Any, Any], None]:
    def hook(act: Any, hook: Any) -> None:
        cache[name] = sae.encode_kept(act.detach())

    return hook
