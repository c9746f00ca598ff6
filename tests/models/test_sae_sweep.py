"""SAE latents swept as a component, against a reference written with hooks: at the SAE's
hook, the activation is rebuilt as ``decode(f') + (x - decode(f))`` with SAELens's
formulas in numpy (``sae_files``), where ``f'`` is the latents with one changed: the
error term kept, as Marks et al. (2024) do. One forward per cell, no code of sweep's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import sweep
from sweep.errors import ConfigError
from sweep.interventions.resample import donors
from tests.helpers import can_reset_peak, in_fresh_process, padded, spec_of, worker
from tests.models.sae_files import reference_decode, reference_encode, save_sae
from tests.zygote import python_m

LAYER = 1
HOOK = f"blocks.{LAYER}.hook_resid_pre"
BASE = ["task.n_prompts=6", "store.plots=false", "runner.progress=false"]
"""The shipped induction model (2 layers, d_model 64) on its own task."""

Change = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(latents of the run being patched, of the source run) -> the changed latents."""


def _reference(w, folder: Path, base: str, change: Change, hook: str = HOOK) -> np.ndarray:
    """logit_diff [prompt] of the ``base`` run with the SAE's latents changed by ``change``."""
    t = w.task
    clean, corrupted = padded(t)
    tokens = clean if base == "clean" else corrupted
    rows = torch.arange(t.n_prompts)

    def rebuild(act: torch.Tensor, hook) -> torch.Tensor:
        x = act.double().numpy()
        f = reference_encode(folder, x)
        error = x - reference_decode(folder, f, x)
        return torch.from_numpy(reference_decode(folder, change(f), x) + error).to(act.dtype)

    with torch.no_grad():
        logits = w.model.run_with_hooks(tokens, fwd_hooks=[(hook, rebuild)])
    last = torch.from_numpy(t.lengths - 1)
    return (logits[rows, last, t.answer] - logits[rows, last, t.wrong]).numpy()


def _latents_of(w, folder: Path, run: str, hook: str = HOOK) -> np.ndarray:
    clean, corrupted = padded(w.task)
    with torch.no_grad():
        _, cache = w.model.run_with_cache(clean if run == "clean" else corrupted)
    return reference_encode(folder, cache[hook].double().numpy())


def _set(where: tuple, value_of: Callable[[np.ndarray], np.ndarray]) -> Change:
    def change(f: np.ndarray) -> np.ndarray:
        out = f.copy()
        out[where] = value_of(f)[where]
        return out

    return change


def _run(tmp: Path, name: str, *extra: str) -> tuple[object, object]:
    over = [*BASE, f"store.path={tmp / name}", *extra]
    return sweep.open_results(sweep.run(over)), worker(over)


def _ids(ids: object) -> str:
    return f"grid.latents=[{','.join(map(str, ids))}]"  # type: ignore[call-overload]


ARCHS = [
    ("standard", {}),
    ("jumprelu", {}),
    ("topk", {"rescale_acts_by_decoder_norm": True}),
    ("gated", {}),
    ("standard", {"normalize_activations": "constant_norm_rescale"}),
    ("jumprelu", {"normalize_activations": "layer_norm"}),
]


@pytest.mark.parametrize(("arch", "cfg"), ARCHS, ids=[f"{a}-{len(c)}{sorted(c)}" for a, c in ARCHS])
def test_patching_latents_equals_the_hooked_reference(tmp_path: Path, arch: str, cfg: dict) -> None:
    folder = save_sae(tmp_path / "sae", arch, 64, 48, HOOK, seed=3, **cfg)
    ids = [0, 5, 17, 30, 47]
    ds, w = _run(tmp_path, "s.zarr", f"sae.path={folder}", _ids(ids),
                 "grid.components=[sae_latents,sae_latents_by_pos]")  # fmt: skip
    assert list(ds["latent"].values) == ids and list(ds["layer"].values) == [LAYER]
    clean = _latents_of(w, folder, "clean")
    got_all = ds["sae_latents"].sel(metric="logit_diff", layer=LAYER)
    got_pos = ds["sae_latents_by_pos"].sel(metric="logit_diff", layer=LAYER)
    moved = 0.0
    for j in ids:
        ref = _reference(w, folder, "corrupted", _set((..., j), lambda f: clean))
        np.testing.assert_allclose(got_all.sel(latent=j).values, ref, atol=2e-4, rtol=0)
        for p in range(0, w.task.seq_len, 3):
            ref = _reference(w, folder, "corrupted", _set((slice(None), p, j), lambda f: clean))
            np.testing.assert_allclose(got_pos.sel(latent=j, pos=p).values, ref, atol=2e-4,
                                       rtol=0, err_msg=f"latent {j} at {p}")  # fmt: skip
        moved = max(moved, float(np.abs(ref - ds["corrupted_baseline"].values[0]).max()))
    assert moved > 1e-3, "no latent moved the metric: the test would not see a wrong patch"


def test_a_latent_that_does_not_change_leaves_the_run_as_it_is(tmp_path: Path) -> None:
    """The error term is kept: changing a latent to the value it has changes nothing, so
    a latent that is 0 in both runs gives exactly the corrupted baseline (the model's
    own run, not the SAE's reconstruction)."""
    folder = save_sae(tmp_path / "sae", "topk", 64, 48, HOOK, seed=1, k=2)
    ds, w = _run(tmp_path, "s.zarr", f"sae.path={folder}", "grid.components=[sae_latents]",
                 _ids(range(48)))  # fmt: skip
    clean, corrupted = (_latents_of(w, folder, run) for run in ("clean", "corrupted"))
    quiet = [j for j in range(48) if not clean[..., j].any() and not corrupted[..., j].any()]
    assert quiet, "every latent fires: no latent to check"
    got = ds["sae_latents"].sel(metric="logit_diff", layer=LAYER, latent=quiet).values
    want = ds["corrupted_baseline"].sel(metric="logit_diff").values
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["noise", "zero", "mean", "resample"])
def test_noising_and_ablating_latents_equal_the_hooked_reference(tmp_path: Path, kind: str) -> None:
    """The clean run with a latent from the corrupted run (noising), 0, its mean over the
    prompts, or other prompts' (averaged over the draws)."""
    folder = save_sae(tmp_path / "sae", "standard", 64, 32, HOOK, seed=2)
    ids = [1, 4, 9]
    how = "intervention.direction=noise" if kind == "noise" else f"intervention={kind}"
    ds, w = _run(tmp_path, "s.zarr", f"sae.path={folder}", how,
                 _ids(ids), "grid.components=[sae_latents,sae_latents_by_pos]")  # fmt: skip
    assert ds.attrs["base_run"] == "clean"
    clean = _latents_of(w, folder, "clean")
    t = w.task
    assert len(set(t.lengths)) == 1  # the plain mean over prompts is the position mean
    sources = {
        "noise": [_latents_of(w, folder, "corrupted")],
        "zero": [np.zeros_like(clean)],
        "mean": [np.broadcast_to(clean.mean(0, keepdims=True), clean.shape)],
        "resample": [clean[row.numpy()] for row in donors(torch.from_numpy(t.lengths), 4, 0)],
    }[kind]
    for j in ids:
        for p in [None, 0, t.seq_len - 1]:
            where = (..., j) if p is None else (slice(None), p, j)
            ref = np.mean([_reference(w, folder, "clean", _set(where, lambda f, s=s: s))
                           for s in sources], axis=0)  # fmt: skip
            got = (ds["sae_latents"].sel(latent=j) if p is None
                   else ds["sae_latents_by_pos"].sel(latent=j, pos=p))  # fmt: skip
            np.testing.assert_allclose(got.sel(metric="logit_diff", layer=LAYER).values, ref,
                                       atol=2e-4, rtol=0, err_msg=f"{kind} {j} {p}")  # fmt: skip


def test_top_latents_are_the_most_active_on_the_clean_prompts(tmp_path: Path) -> None:
    folder = save_sae(tmp_path / "sae", "standard", 64, 64, HOOK, seed=4)
    ds, w = _run(tmp_path, "s.zarr", f"sae.path={folder}", "grid.latents=top:5",
                 "grid.components=[sae_latents]")  # fmt: skip
    clean = _latents_of(w, folder, "clean")
    pos = np.arange(clean.shape[1])[None, :]
    assert w.model.cfg.default_prepend_bos  # the BOS token is left out of the ranking
    real = (pos < w.task.lengths[:, None]) & (pos > 0)
    mean = (clean * real[..., None]).sum((0, 1))
    assert list(ds["latent"].values) != sorted(np.argsort(-clean.sum((0, 1)))[:5].tolist())
    assert list(ds["latent"].values) == sorted(np.argsort(-mean, kind="stable")[:5].tolist())
    config = yaml.safe_load(ds.attrs["config"])
    assert config["grid"]["latents"] == "top:5" and config["sae"]["path"] == str(folder)
    assert json.loads(ds.attrs["patchsweep_fingerprint"])["sae"]["saes"]  # by content


def test_all_latents_and_a_single_id(tmp_path: Path) -> None:
    folder = save_sae(tmp_path / "sae", "standard", 64, 24, HOOK, seed=3)
    every, _ = _run(tmp_path, "a.zarr", f"sae.path={folder}", "grid.latents=all",
                    "grid.components=[sae_latents]")  # fmt: skip
    assert list(every["latent"].values) == list(range(24))
    one, _ = _run(tmp_path, "o.zarr", f"sae.path={folder}", "grid.latents=7",
                  "grid.components=[sae_latents]")  # fmt: skip
    assert list(one["latent"].values) == [7]
    np.testing.assert_array_equal(one["sae_latents"].values,
                                  every["sae_latents"].sel(latent=[7]).values)  # fmt: skip


def test_a_resumed_store_keeps_its_latents_whatever_top_n_picks_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``top:N`` is chosen on the machine that runs: one that picks others (another
    device, a near tie) resumes with the store's latents, so no value lands under
    another latent's id."""
    import zarr

    from sweep.engine import latents

    folder = save_sae(tmp_path / "sae", "standard", 64, 48, HOOK, seed=3)
    over = [*BASE, f"sae.path={folder}", "grid.latents=top:4", "store.prompt_block=3",
            "grid.components=[sae_latents]"]  # fmt: skip
    path = sweep.run([*over, f"store.path={tmp_path / 's.zarr'}"])
    whole = sweep.open_results(path)["sae_latents"].values
    ids = list(sweep.open_results(path)["latent"].values)
    done = zarr.open_group(path, mode="r+")["_patchsweep/done"]
    assert list(done[:]) == [1, 1]
    done[1] = 0  # the second prompt block's unit is to do again
    others = tuple(i for i in range(48) if i not in ids)[:4]
    monkeypatch.setattr(latents, "top_latents", lambda *a, **k: others)
    sweep.run([*over, f"store.path={tmp_path / 's.zarr'}"])
    ds = sweep.open_results(path)
    assert list(ds["latent"].values) == ids
    np.testing.assert_array_equal(ds["sae_latents"].values, whole)


def test_one_sae_per_layer_and_the_union_of_their_top_latents(tmp_path: Path) -> None:
    hooks = [f"blocks.{i}.hook_resid_pre" for i in (0, 1)]
    folders = [save_sae(tmp_path / f"sae{i}", "standard", 64, 40, h, seed=7 + i)
               for i, h in enumerate(hooks)]  # fmt: skip
    ds, w = _run(tmp_path, "s.zarr", f"sae.paths=[{folders[1]},{folders[0]}]",
                 "grid.latents=top:2", "grid.components=[sae_latents]")  # fmt: skip
    assert list(ds["layer"].values) == [0, 1]
    tops = []
    for folder, hook in zip(folders, hooks, strict=True):
        f = _latents_of(w, folder, "clean", hook)[:, 1:]  # after the BOS token
        tops += np.argsort(-f.sum((0, 1)), kind="stable")[:2].tolist()
    assert list(ds["latent"].values) == sorted(set(tops))
    for layer, (folder, hook) in enumerate(zip(folders, hooks, strict=True)):
        clean = _latents_of(w, folder, "clean", hook)
        for j in ds["latent"].values:
            ref = _reference(w, folder, "corrupted", _set((..., j), lambda f, c=clean: c), hook)
            got = ds["sae_latents"].sel(metric="logit_diff", layer=layer, latent=j).values
            np.testing.assert_allclose(got, ref, atol=2e-4, rtol=0, err_msg=f"L{layer} {j}")


def test_the_fast_and_the_hooked_engine_agree_on_a_gpt2_checkpoint(
    tmp_path: Path, gpt2_dir: Path
) -> None:
    """Latents at resid_post of a GPT-2 checkpoint, on the suffix forward and the model's
    own hooked one."""
    from tests.helpers import ioi_rows, write_task

    task = write_task(tmp_path / "task.jsonl", ioi_rows(4))
    hook = "blocks.0.hook_resid_post"
    folder = save_sae(tmp_path / "sae", "jumprelu", 64, 40, hook, seed=5)
    over = ["model=hf", f"model.name={gpt2_dir}", "task=prompts", f"task.path={task}",
            f"sae.path={folder}", "grid.components=[sae_latents_by_pos,sae_latents]",
            "grid.latents=top:6", "store.plots=false", "runner.progress=false"]  # fmt: skip
    fast = sweep.open_results(sweep.run([*over, f"store.path={tmp_path / 'f.zarr'}"]))
    hooks = sweep.open_results(
        sweep.run([*over, f"store.path={tmp_path / 'h.zarr'}", "runner.engine=hooks"])
    )
    assert fast.attrs["engine"] == "fast" and hooks.attrs["engine"] == "hooks"
    for name in ("sae_latents", "sae_latents_by_pos"):
        np.testing.assert_allclose(fast[name].values, hooks[name].values, atol=2e-4, rtol=0)
    w = worker([*over, f"store.path={tmp_path / 'x.zarr'}"])
    clean, corrupted = padded(w.task)
    with torch.no_grad():
        _, cache = w.model.run_with_cache(clean)
    f_clean = reference_encode(folder, cache[hook].double().numpy())
    j = int(fast["latent"].values[0])

    def rebuild(act: torch.Tensor, hook: object) -> torch.Tensor:
        x = act.double().numpy()
        f = reference_encode(folder, x)
        g = f.copy()
        g[..., j] = f_clean[..., j]
        out = reference_decode(folder, g, x) + x - reference_decode(folder, f, x)
        return torch.from_numpy(out).to(act.dtype)

    with torch.no_grad():
        logits = w.model.run_with_hooks(corrupted, fwd_hooks=[(hook, rebuild)])
    t, rows = w.task, torch.arange(w.task.n_prompts)
    last = torch.from_numpy(t.lengths - 1)
    ref = (logits[rows, last, t.answer] - logits[rows, last, t.wrong]).numpy()
    got = fast["sae_latents"].sel(metric="logit_diff", layer=0, latent=j).values
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=0)


@pytest.mark.parametrize(("arch", "cfg"), ARCHS[2:5], ids=["topk", "gated", "norm"])
def test_attribution_over_latents_is_the_gradient_through_the_decoder(
    tmp_path: Path, arch: str, cfg: dict
) -> None:
    """AtP over every latent at every position from one backward: the estimate is
    ``(f_clean - f_corrupted) * d metric / d f`` where the latents enter the model as
    ``x + (f - f.detach()) @ W_dec`` (autograd on the latents themselves, here in float64
    from the files), and the verified cells equal exact patching."""
    folder = save_sae(tmp_path / "sae", arch, 64, 48, HOOK, seed=6, **cfg)
    ids = list(range(48))
    ds, w = _run(tmp_path, "s.zarr", f"sae.path={folder}", _ids(ids), "intervention=atp",
                 "intervention.verify_top_k=6",
                 "grid.components=[sae_latents,sae_latents_by_pos]")  # fmt: skip
    from safetensors.torch import load_file

    weights = {k: v.double() for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    dec = weights["W_dec"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        dec = dec / dec.norm(dim=-1, keepdim=True)
    clean = torch.from_numpy(_latents_of(w, folder, "clean"))
    t = w.task
    _, corrupted_ids = padded(t)
    rows, last = torch.arange(t.n_prompts), torch.from_numpy(t.lengths - 1)
    leaf: dict[str, torch.Tensor] = {}

    def through_latents(act: torch.Tensor, hook: object) -> torch.Tensor:
        x = act.detach().double()
        f = torch.from_numpy(reference_encode(folder, x.numpy())).requires_grad_(True)
        leaf["f"] = f
        scale = 1.0
        if cfg.get("normalize_activations") == "constant_norm_rescale":
            scale = x.norm(dim=-1, keepdim=True) / 64**0.5
        return (x + ((f - f.detach()) @ dec) * scale).to(act.dtype)

    logits = w.model.run_with_hooks(corrupted_ids, fwd_hooks=[(HOOK, through_latents)])
    metric = logits[rows, last, t.answer] - logits[rows, last, t.wrong]
    (grad,) = torch.autograd.grad(metric.sum(), [leaf["f"]])
    f = leaf["f"].detach()
    per_pos = ((clean - f) * grad).numpy()  # [prompt, pos, latent]
    base = ds["corrupted_baseline"].sel(metric="logit_diff").values
    got_pos = ds["sae_latents_by_pos"].sel(metric="logit_diff", layer=LAYER).values - base
    np.testing.assert_allclose(got_pos, per_pos.transpose(1, 2, 0), atol=1e-4, rtol=1e-4)
    got_all = ds["sae_latents"].sel(metric="logit_diff", layer=LAYER).values - base
    np.testing.assert_allclose(got_all, per_pos.sum(1).T, atol=1e-4, rtol=1e-4)
    assert np.abs(per_pos).max() > 1e-3
    patched, _ = _run(tmp_path, "p.zarr", f"sae.path={folder}", _ids(ids),
                      "grid.components=[sae_latents,sae_latents_by_pos]")  # fmt: skip
    verified = 0
    for name in ("sae_latents", "sae_latents_by_pos"):
        exact = ds[f"{name}_exact"].sel(metric="logit_diff", layer=LAYER)
        checked = exact.notnull().any("prompt").values
        verified += int(checked.sum())
        want = patched[name].sel(metric="logit_diff", layer=LAYER).values
        np.testing.assert_allclose(exact.values[checked], want[checked], atol=1e-5, rtol=0)
    assert verified == 6


@pytest.mark.parametrize(
    ("make", "extra", "says"),
    [
        (
            ("standard", 64, 8, "blocks.5.hook_resid_pre"),
            [],
            "reads blocks.5.hook_resid_pre, which this model does not have (2 layers)",
        ),
        (("standard", 32, 8, HOOK), [], "reads vectors of 32 (d_in), this model's hook_resid_pre"),
        (("standard", 64, 8, HOOK), ["grid.latents=[3,8]"], "grid.latents: [8] out of range"),
        (("standard", 64, 8, HOOK), ["grid.latents=best:3"], "give latent ids"),
        (("standard", 64, 8, HOOK), ["grid.latents=[]"], "top:N (the N most active"),
        (("standard", 64, 8, HOOK), ["grid.layers=[0]"], "grid.layers: [0] have no SAE"),
        (None, [], "sae_latents needs an SAE: give sae.path=DIR"),
        (None, ["sae.path=/nowhere"], "sae.path: /nowhere: no cfg.json here"),
    ],
)
def test_a_bad_sae_sweep_is_one_line_before_any_unit(
    tmp_path: Path, make: tuple | None, extra: list[str], says: str
) -> None:
    over = [*BASE, f"store.path={tmp_path / 's.zarr'}", "grid.components=[sae_latents]", *extra]
    if make is not None:
        arch, d_in, d_sae, hook = make
        over.append(f"sae.path={save_sae(tmp_path / 'sae', arch, d_in, d_sae, hook)}")
    with pytest.raises(ConfigError) as e:
        spec_of(over)  # before the model loads (its size is read from the shipped record)
    assert says in str(e.value)
    assert not (tmp_path / "s.zarr").exists()


def test_the_command_line_says_it_in_one_line(tmp_path: Path) -> None:
    folder = save_sae(tmp_path / "sae", "standard", 32, 8, HOOK)
    done = python_m(["sweep", *BASE, f"sae.path={folder}", "grid.components=[sae_latents]",
                     f"store.path={tmp_path / 's.zarr'}"], tmp_path, timeout=300)  # fmt: skip
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("patchsweep: error: sae.path: ") and "d_in" in lines[0]
    assert not (tmp_path / "s.zarr").exists()


WIDE_SAE = """
import json, sys
import numpy as np
from helpers import peak_extra_mb, worker
from sweep.engine import latents
from sweep.engine.budget import CACHE_SHARE
folder, memory, chosen = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w = worker(["task.n_prompts=16", "store.plots=false", f"sae.path={folder}",
            f"grid.latents={chosen}", "grid.components=[sae_latents]",
            f"runner.memory_mb={memory}"])
name = "blocks.1.hook_resid_pre.sae_latents"
block = w.block(0, 8)
top = peak_extra_mb(lambda: latents.top_latents(w.model, w.task, 3))
build = peak_extra_mb(lambda: w.kind.build(np.arange(16)))
print(json.dumps({"width": block.base[name].shape[-1], "probe": w.probe_n,
                  "probe_bytes": w._probe().base[name].nbytes * 2, "top": top, "build": build,
                  "share": CACHE_SHARE * memory * 2**20}))
"""


@pytest.mark.skipif(not can_reset_peak(), reason="needs Linux /proc/self/clear_refs")
def test_a_wide_sae_takes_what_runner_memory_mb_allows(tmp_path: Path) -> None:
    """A 65k-latent SAE on 16 prompts of 14 tokens (a run's full latents: 59 MB) under
    runner.memory_mb=24: ``top:3`` caches 3 columns, ranks them encoding a few tokens at
    a time, and ``all`` starts on fewer prompts than 8. Each in a fresh process."""
    folder = save_sae(tmp_path / "sae", "standard", 64, 65536, HOOK, seed=5)
    top = in_fresh_process(WIDE_SAE, str(folder), "24", "top:3")
    assert top["width"] == 3 and top["probe"] == 8, top
    assert top["top"] < 24 and top["build"] < 24, top  # before: 16 tokens' full latents each
    every = in_fresh_process(WIDE_SAE, str(folder), "24", "all")
    assert every["width"] == 65536, every
    assert 1 <= every["probe"] < 8 and every["probe_bytes"] <= every["share"], every
