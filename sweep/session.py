"""Sweeps from Python, as a notebook runs them: ``Sweep(overrides, model=m).run()``.

The config is composed and checked when the ``Sweep`` is made (a bad key raises
``sweep.errors.ConfigError``, the command line's one line); a model loaded once
(``load_model``) serves any number of sweeps; ``run`` returns the opened results.
Progress shows as tqdm's notebook bar in Jupyter (``tqdm.auto``), a text bar elsewhere.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sweep.errors import ConfigError


def _is_model_key(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "model" or key.startswith("model.")


def load_model(overrides: list[str] | None = None) -> Any:
    """The TransformerBridge the overrides' ``model`` keys describe (``["model=hf",
    "model.name=gpt2"]``), loaded once: pass it to every ``Sweep`` that uses it."""
    from sweep.config import to_spec
    from sweep.driver import compose_config
    from sweep.models import load_model as load

    keys = [o for o in overrides or [] if _is_model_key(o)]
    model = load(to_spec(compose_config(keys)).model)
    model._patchsweep_model_keys = keys  # what a Sweep given this model names it by
    return model


class Sweep:
    """One sweep: its checked config, and after ``run`` its summary and results.

    ``model``: a TransformerBridge already loaded in this process; the workers use it
    instead of loading one (``runner=local``: a Ray worker loads its own). The config's
    ``model`` keys still name the model in the store; without any, they are the keys
    ``load_model`` loaded it by, else ``model=hf model.name=<the model's cfg.model_name>``.
    """

    def __init__(self, overrides: list[str] | None = None, *, model: Any = None) -> None:
        from sweep.config import to_spec
        from sweep.driver import compose_config

        overrides = list(overrides or [])
        known = getattr(model, "_patchsweep_model_keys", None)
        if model is not None and not any(_is_model_key(o) for o in overrides) and known is not None:
            overrides = [*known, *overrides]  # the keys load_model loaded it by
        elif model is not None and not any(_is_model_key(o) for o in overrides):
            name = str(model.cfg.model_name)
            if name == "native":  # boot_native's models (and the shipped one) are all "native"
                raise ConfigError(
                    "model: the given model does not say which it is (its cfg.model_name is "
                    "'native'); pass the model keys it was loaded with (model=induction, or "
                    "model=native and its model.native.KEY=VALUE overrides)"
                )
            overrides = ["model=hf", f"model.name={name}", *overrides]
        self.overrides = overrides
        self.cfg = compose_config(overrides)
        self.spec = to_spec(self.cfg)
        if model is not None and self.spec.runner.kind != "local":
            raise ConfigError(
                "runner: a model loaded in this process runs with runner=local; for "
                "Ray, leave model= out and name the model (each worker loads its own)"
            )
        self.model = model
        self.summary: Any = None
        self.pictures: Path | None = None

    @property
    def path(self) -> Any:
        """The store (``store.path``)."""
        return self.summary.path if self.summary is not None else self.spec.store.path

    def run(self) -> Any:
        """Run or resume the sweep; the results as ``sweep.open_results`` gives them. With
        ``store.plots=true`` it also draws the pictures (``self.pictures``)."""
        from sweep.driver import run_spec
        from sweep.results.dataset import open_results
        from sweep.runners.base import default_worker

        make = default_worker if self.model is None else partial(_worker, model=self.model)
        self.summary = run_spec(self.spec, OmegaConf.to_yaml(self.cfg, resolve=True), make)
        if self.spec.store.plots:
            from sweep.results.plot import render

            self.pictures = render(self.summary.path, min_prompts=self.spec.analysis.min_prompts)
        return open_results(self.summary.path)

    def report(self) -> str:
        """The command line's summary of the last run: baselines and top cells."""
        if self.summary is None:
            raise ConfigError("Sweep.report: run the sweep first (Sweep.run())")
        from sweep.cli import report

        return report(self.summary, min_prompts=self.spec.analysis.min_prompts)


def _worker(spec: Any, model: Any) -> Any:
    from sweep.engine.worker import Worker

    return Worker(spec, model=model)
