"""SAELens folders read without SAELens: every architecture's encode and decode equal
SAELens's formulas (written again in numpy, from the files), the error term makes the
reconstruction the activation itself, and a bad folder is one line before any model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep.errors import ConfigError
from sweep.models.sae import Sae, read_config
from tests.models.sae_files import reference_decode, reference_encode, save_sae

ARCHS = ["standard", "jumprelu", "topk", "gated"]
NORMS = ["none", "constant_norm_rescale", "layer_norm"]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", ARCHS)
def test_encode_and_decode_equal_saelens_formulas(tmp_path: Path, arch: str, norm: str) -> None:
    folder = save_sae(tmp_path / arch, arch, 16, 40, "blocks.1.hook_resid_pre",
                      normalize_activations=norm)  # fmt: skip
    sae = Sae(read_config(folder))
    x = torch.randn(3, 5, 16, dtype=torch.float32)
    f = sae.encode(x)
    x64 = x.double().numpy()
    want = reference_encode(folder, x64)
    np.testing.assert_allclose(f.numpy(), want, atol=1e-5)
    assert 0 < (want > 0).mean() < 1, "the SAE should have active and inactive latents"
    got = sae.decode(f, x).numpy()
    np.testing.assert_allclose(got, reference_decode(folder, want, x64), atol=1e-4)
    # A latent changed by df changes the activation as the decoder says, error term kept:
    df = torch.zeros_like(f)
    df[1, 2, 7] = 1.5
    x_hat, x_hat2 = (reference_decode(folder, g, x64) for g in (want, want + df.double().numpy()))
    np.testing.assert_allclose(sae.delta(df, x).numpy(), x_hat2 - x_hat, atol=1e-4)


def test_topk_rescaled_by_decoder_norm_and_old_configs(tmp_path: Path) -> None:
    """SAELens 6.14's rescale_acts_by_decoder_norm, and a pre-6 cfg.json (hook at the top
    level, topk as activation_fn_str with its k in activation_fn_kwargs)."""
    a = save_sae(tmp_path / "a", "topk", 8, 24, "blocks.0.hook_resid_post",
                 rescale_acts_by_decoder_norm=True)  # fmt: skip
    x = torch.randn(4, 8)
    np.testing.assert_allclose(Sae(read_config(a)).encode(x).numpy(),
                               reference_encode(a, x.double().numpy()), atol=1e-5)  # fmt: skip
    b = save_sae(tmp_path / "b", "standard", 8, 24, "unused", metadata=None, architecture=None,
                 hook_name="blocks.0.hook_mlp_out", activation_fn_str="topk",
                 activation_fn_kwargs={"k": 3})  # fmt: skip
    cfg = read_config(b)
    assert (cfg.architecture, cfg.k, cfg.hook, cfg.layer, cfg.stage) == (
        "topk",
        3,
        "blocks.0.hook_mlp_out",
        0,
        "hook_mlp_out",
    )
    assert int((Sae(cfg).encode(x) > 0).sum(-1).max()) <= 3


BAD = {
    "no folder": (lambda d: d / "missing", "no cfg.json here"),
    "no weights": (lambda d: (d / "sae_weights.safetensors").unlink() or d, "no sae_weights"),
    "not json": (lambda d: (d / "cfg.json").write_text("{") and d, "is not JSON"),
    "unknown architecture": (lambda d: _edit(d, architecture="matryoshka"),
                             "'matryoshka' is not supported"),
    "no hook": (lambda d: _edit(d, metadata={}), "names no hook"),
    "hook of no block": (lambda d: _edit(d, metadata={"hook_name": "hook_embed"}),
                         "blocks.LAYER.STAGE"),
    "hook_z": (lambda d: _edit(d, metadata={"hook_name": "blocks.0.attn.hook_z"}),
               "are supported"),
    "d_in wrong": (lambda d: _edit(d, d_in=9), "W_enc is [8, 24], not [9, 24]"),
    "weights not safetensors": (lambda d: (d / "sae_weights.safetensors").write_bytes(b"xx") and d,
                                "not a safetensors file"),
}  # fmt: skip


def _edit(folder: Path, **keys: object) -> Path:
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(keys)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_folder_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    folder = save_sae(tmp_path / "sae", "standard", 8, 24, "blocks.0.hook_resid_pre")
    spoil, words = BAD[case]
    path = spoil(folder)
    with pytest.raises(ConfigError) as e:
        read_config(path)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"sae.path: {path}"), line
    assert words in line, line


@pytest.mark.parametrize("arch", ARCHS)
def test_kept_columns_and_chunks_change_no_value(tmp_path: Path, arch: str) -> None:
    """A sweep over a few latents caches their columns only, and encodes a few tokens at a
    time: each kept value, the per-latent sums ``top:N`` ranks by and the gradient AtP
    reads equal the full encoding's at those latents."""
    folder = save_sae(tmp_path / arch, arch, 16, 40, "blocks.1.hook_resid_pre")
    sae = Sae(read_config(folder))
    x = torch.randn(3, 5, 16)
    full, grad = sae.encode(x), torch.randn(3, 5, 16)
    full_grad = sae.latent_grad(grad, x)
    ids = [2, 7, 31, 39]
    sae.budget(3 * 4 * 40 * 4)  # 3 tokens at a time
    assert sae.chunk == 3
    sae.keep(ids[::-1])
    kept = sae.encode_kept(x)
    assert kept.shape == (3, 5, 4)
    np.testing.assert_allclose(kept.numpy(), full[..., ids].numpy(), atol=1e-6)
    np.testing.assert_allclose(sae.latent_grad(grad, x).numpy(), full_grad[..., ids].numpy(),
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(sae.encode_sum(x.reshape(-1, 16)).numpy(),
                               full.sum((0, 1)).numpy(), atol=1e-5)  # fmt: skip
    assert sae.columns.tolist() == sorted(ids)  # the order ``NodeGrid._columns`` maps ids by
    assert sae.ids(torch.tensor([3, 0])).tolist() == [39, 2]
    sae.keep(None)
    assert sae.encode_kept(x).shape == (3, 5, 40)
