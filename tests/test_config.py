"""One source for the config: specs define keys and defaults; Hydra's schemas, conf/ and
the fingerprint follow from them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ioi_rows, spec_of, write_task

import sweep
from sweep.config import OPTIONS, schema
from sweep.driver import conf_dir
from sweep.interventions.specs import ResampleSpec
from sweep.multirun import job_store, sweep_of
from sweep.spec import fingerprint


def test_defaults_come_from_the_specs() -> None:
    """The bug: intervention.samples defaulted to 1 in one place and 4 in another."""
    composed = spec_of(["intervention=resample"]).intervention
    assert composed == ResampleSpec()
    assert composed.samples == 4
    for options in OPTIONS.values():
        for spec in options.values():
            twin = schema(spec)
            keys = [f for f in dataclasses.fields(spec) if not f.metadata.get("internal")]
            for f, t in zip(keys, dataclasses.fields(twin), strict=True):
                assert (f.name, f.default) == (t.name, t.default) or f.default == "???"


def test_conf_yaml_repeats_no_default() -> None:
    """A YAML option file sets only what differs from its spec's defaults."""
    root = conf_dir()
    for group, options in OPTIONS.items():
        for path in (root / group).glob("*.yaml"):
            data = yaml.safe_load(path.read_text()) or {}
            base = data.pop("defaults")[0].removeprefix("base_")
            spec = options[base]
            defaults = {f.name: f.default for f in dataclasses.fields(spec)}
            for key, value in data.items():
                assert defaults[key] != value, f"{path.name} repeats {key}: {value}"


def test_cfg_job_of_the_induction_model_has_no_native_section() -> None:
    cfg = sweep.compose_config([])
    assert set(cfg.model) == {"name", "compat", "dtype", "device"}
    assert "native" in sweep.compose_config(["model=native"]).model


def test_fingerprint_compares_meaning_not_spelling(tmp_path: Path) -> None:
    """The task as read (not its path), the model's identity (not the device), no keys of
    groups that are not in use."""
    task = write_task(tmp_path / "t.jsonl", ioi_rows(2))
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        a = fingerprint(spec_of(["model=native", "task=prompts", "task.path=t.jsonl"]))
        b = fingerprint(spec_of(["model=native", "task=prompts", "task.path=./t.jsonl",
                                 "model.device=cpu"]))  # fmt: skip
        c = fingerprint(spec_of(["model=native", "task=prompts", f"task.path={task}"]))
    finally:
        os.chdir(here)
    assert a == b == c
    assert "device" not in json.dumps(a) and "path" not in json.dumps(a)
    assert "native" not in fingerprint(spec_of(["model=hf", "model.name=gpt2"]))["model"]
    write_task(task, ioi_rows(3))  # the file changed: the fingerprint does
    assert fingerprint(spec_of(["model=native", "task=prompts", f"task.path={task}"])) != c


def test_multirun_store_names_are_the_job_number_and_the_overrides_that_vary() -> None:
    """Names were every override (``mr-grid.components=_resid_pre,z_,intervention...``)."""
    cfg = sweep.compose_config(["store.path=/runs/s.zarr"])
    sweep_ = sweep_of(["task.n_prompts=4,8", "store.chunk_kb=1,1024", "grid.layers=[0]"])
    assert sweep_.varied == ("task.n_prompts", "store.chunk_kb")
    assert sweep_.jobs[1] == ("task.n_prompts=4", "store.chunk_kb=1024", "grid.layers=[0]")
    names = [job_store(cfg, list(job), i, sweep_.varied) for i, job in enumerate(sweep_.jobs)]
    assert names == [
        "/runs/s-0-store.chunk_kb=1,task.n_prompts=4.zarr",
        "/runs/s-1-store.chunk_kb=1024,task.n_prompts=4.zarr",
        "/runs/s-2-store.chunk_kb=1,task.n_prompts=8.zarr",
        "/runs/s-3-store.chunk_kb=1024,task.n_prompts=8.zarr",
    ]
    odd = sweep_of(["grid.components=[resid_pre],[z]"])
    assert job_store(cfg, list(odd.jobs[1]), 1, odd.varied) == "/runs/s-1-grid.components=_z_.zarr"


def test_results_side_imports_no_torch_transformer_lens_or_hydra(tmp_path: Path) -> None:
    """Opening a store, analysis, plots and status stay light."""
    path = sweep.run(["model=native", "task=ioi", "task.n_prompts=2",
                      "grid.components=[resid_pre]", f"store.path={tmp_path / 's.zarr'}",
                      "runner.progress=false"])  # fmt: skip
    code = f"""
import sys, sweep, sweep.analysis, sweep.plot, sweep.status
ds = sweep.open_results({str(path)!r})
sweep.analysis.top_cells(ds, 3)
sweep.status({str(path)!r})
sweep.plot.heatmap(ds.load(), "resid_pre", "logit_diff")
heavy = [m for m in ("torch", "transformer_lens", "hydra", "omegaconf", "ray") if m in sys.modules]
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("store.lease_timeout_s=0", r"store.lease_timeout_s: must be a positive number"),
        ("runner.memory_mb=-1", r"runner.memory_mb: must be a positive number"),
        ("grid.positions=[1,1]", r"grid.positions: repeated entries"),
        ("grid.layers=1", r"^grid.layers: takes a list in brackets, even of one value"),
    ],
)
def test_spec_checks_name_the_key(override: str, message: str) -> None:
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        spec_of([override])


def test_a_list_key_given_one_bare_value_says_to_use_brackets() -> None:
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^grid.receivers: takes a list in brackets") as e:
        spec_of(["grid=edges", "grid.receivers=a1.*.k"])
    assert "'grid.receivers=[...]'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=native", "model.native.n_layers=3", "+model.native.d_vocab=300",
         "task=ioi", "task.n_prompts=8", "grid=edges", "intervention=eap",
         "intervention.direction=noise", "store.path=/tmp/a.zarr"],
        ["grid=paths", "grid.receivers=[a1.*.q,a2.*.v]"],
        ["grid.components=[resid_pre,attn_out]", "grid.layers=[0,2]",
         "metric.names=[logit_diff,prob]", "runner=ray", "runner.num_workers=2",
         "intervention=resample", "intervention.samples=3"],
        ["task=prompts", "task.path=x.jsonl", "store.path=${oc.env:HOME}/s.zarr"],
        ["~store.plots", "store.path=a.zarr"],  # a deletion: Hydra's own way (refused)
        ["model=induction", "model=native"],  # a choice given twice: the last wins
    ],
)  # fmt: skip
def test_compose_equals_hydras_own_composition(overrides: list[str]) -> None:
    """Hydra composes each choice of options once; the key=value overrides applied to a
    copy must give what Hydra's whole composition gives, values and struct mode alike."""
    from omegaconf import OmegaConf

    from sweep.config import _hydra_compose, compose, with_grid_defaults

    for _ in range(2):  # composed, then from the cached options
        try:
            ours = compose(overrides)
        except sweep.errors.ConfigError as e:
            with pytest.raises(sweep.errors.ConfigError) as theirs:
                _hydra_compose(with_grid_defaults(overrides))
            assert str(e) == str(theirs.value)
            return
        hydras = _hydra_compose(with_grid_defaults(overrides))
        assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras)
        assert OmegaConf.is_struct(ours) and not OmegaConf.is_readonly(ours)
        ours.store.path = "changed.zarr"  # a copy: the next call does not see it
    assert compose(overrides).store.path != "changed.zarr"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("store.nope=1", "store.nope: no such key"),
        ("model=nope", "model=nope: no such option"),
        ("task.n_prompts=many", "task.n_prompts: Value 'many' of type 'str' could not be"),
    ],
)
def test_a_bad_override_gets_hydras_message_in_one_line(override: str, message: str) -> None:
    from sweep.config import compose

    for _ in range(2):
        with pytest.raises(sweep.errors.ConfigError) as e:
            compose(["grid=edges", override])
        assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_every_intervention_kind_has_its_spec_and_class() -> None:
    """The config side's specs (no torch) and the engine's classes name the same kinds,
    each class with its kind's spec."""
    from sweep.interventions import SPECS, kinds

    classes = kinds()
    assert set(classes) == set(SPECS) == {"patch", "zero", "mean", "resample", "atp", "eap"}
    assert all(cls.SPEC is SPECS[kind] for kind, cls in classes.items())


@pytest.mark.parametrize(
    ("overrides", "base"),
    [
        ([], "corrupted"), (["intervention.direction=noise"], "clean"),
        (["intervention=zero"], "clean"), (["intervention=mean"], "clean"),
        (["intervention=resample"], "clean"), (["intervention=atp"], "corrupted"),
        (["intervention=atp", "intervention.direction=noise"], "clean"),
        (["grid=edges", "intervention=eap"], "corrupted"),
        (["grid=edges", "intervention=eap", "intervention.direction=noise"], "clean"),
        (["grid=edges", "intervention=eap", "intervention.ablation=zero"], "clean"),
        (["grid=edges", "intervention=eap", "intervention.ablation=mean"], "clean"),
    ],
)  # fmt: skip
def test_the_spec_names_the_run_its_intervention_changes(overrides: list[str], base: str) -> None:
    """The driver records the spec's base run without building the intervention: the
    same run the engine's class changes."""
    from sweep.interventions import build

    spec = spec_of(overrides).intervention
    assert spec.base_run == build(spec).base_run == base
