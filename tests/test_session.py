"""Sweeps from a notebook: a model loaded once serves every sweep, results come back
opened, and a bad key raises the project's own one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import sweep
import sweep.engine.worker as worker_module
from sweep.errors import ConfigError

OVER = ["task=ioi", "task.n_prompts=4", "grid.components=[resid_pre]", "grid.layers=[1]",
        "runner.progress=false", "store.plots=false"]  # fmt: skip


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model a worker loads by itself (the real loader, counted)."""
    seen: list[str] = []
    real = worker_module.load_model

    def counted(spec):  # type: ignore[no-untyped-def]
        seen.append(spec.name)
        return real(spec)

    monkeypatch.setattr(worker_module, "load_model", counted)
    return seen


def by_hand(model, ds: xr.Dataset, prompt: int, layer: int, pos: int) -> float:
    """The same patch with TransformerLens hooks on the given model."""
    clean = model.to_tokens(str(ds["clean_text"][prompt].values))
    corrupted = model.to_tokens(str(ds["corrupted_text"][prompt].values))
    hook = f"blocks.{layer}.hook_resid_pre"
    _, cache = model.run_with_cache(clean, names_filter=hook)

    def patch(act: torch.Tensor, hook: object) -> torch.Tensor:
        act[0, pos] = cache[hook.name][0, pos]  # type: ignore[attr-defined]
        return act

    with torch.no_grad():
        logits = model.run_with_hooks(corrupted, fwd_hooks=[(hook, patch)])
    answer, wrong = int(ds["answer_id"][prompt]), int(ds["wrong_id"][prompt])
    return float(logits[0, -1, answer] - logits[0, -1, wrong])


def test_a_loaded_model_serves_every_sweep_without_another_load(
    tmp_path: Path, loads: list[str]
) -> None:
    model = sweep.load_model(["model=native"])
    first = sweep.Sweep(["model=native", *OVER, f"store.path={tmp_path / 'a.zarr'}"], model=model)
    ds = first.run()
    second = sweep.Sweep(
        ["model=native", *OVER, "grid.layers=[0]", f"store.path={tmp_path / 'b.zarr'}"],
        model=model,
    )
    other = second.run()
    assert loads == []  # neither sweep loaded a model of its own
    assert isinstance(ds, xr.Dataset) and int(other["layer"][0]) == 0
    # The values are the given model's (another random native model gives others).
    for prompt, pos in ((0, 3), (2, int(ds["prompt_length"][2]) - 1)):
        got = float(ds["resid_pre"].sel(metric="logit_diff", layer=1, pos=pos, prompt=prompt))
        assert got == pytest.approx(by_hand(model, ds, prompt, 1, pos), abs=1e-4)
    assert "top cells by |effect| on logit_diff" in first.report()
    sweep.Sweep(["model=native", *OVER, f"store.path={tmp_path / 'c.zarr'}"]).run()
    assert loads == ["native"]  # without model=, the worker loads one


def test_a_model_without_model_keys_is_named_by_how_it_was_loaded(
    tmp_path: Path, gpt2_dir: Path, loads: list[str]
) -> None:
    """Without model keys, a Sweep names a model by the keys load_model loaded it with (the
    default model too); a model made otherwise, by its own name, if it has one."""
    from transformer_lens.model_bridge import TransformerBridge

    model = sweep.load_model(["model=hf", f"model.name={gpt2_dir}"])
    s = sweep.Sweep([*OVER, "store.plots=true", f"store.path={tmp_path / 's.zarr'}"], model=model)
    ds = s.run()
    assert loads == [] and ds.attrs["model"] == str(gpt2_dir) == model.cfg.model_name
    assert s.pictures is not None and (s.pictures / "index.html").is_file()
    np.testing.assert_array_equal(ds["layer"].values, [1])
    default = sweep.load_model([])  # the shipped model, as python -m sweep runs it
    d = sweep.Sweep([*OVER[2:], f"store.path={tmp_path / 'd.zarr'}"], model=default).run()
    assert loads == [] and d.attrs["model"] == "induction"
    cfg = dict(n_layers=1, d_model=16, n_ctx=16, d_head=4, n_heads=4, d_vocab=50, act_fn="relu")
    by_hand = TransformerBridge.boot_native(cfg)
    with pytest.raises(ConfigError, match=r"^model: the given model does not say which it is"):
        sweep.Sweep(OVER, model=by_hand)


def test_a_bad_key_raises_the_one_line_error_before_anything_loads(loads: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"^grid.layerz") as e:
        sweep.Sweep(["grid.layerz=[0]"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^runner: a model loaded in this process"):
        sweep.Sweep(["model=native", "runner=ray"], model=object())
    assert loads == []
