"""Hydra's side of the config: schemas derived from the frozen specs, and back to specs.

Hydra merges overrides into mutable structured configs, so each frozen spec class gets a
mutable twin with the same fields, types and defaults (``schema``), registered in the
ConfigStore where conf/'s defaults lists expect it. An unknown key or a wrong type then
fails at composition, naming the key; ``to_spec`` turns the composed config back into the
frozen specs, whose ``__post_init__`` checks values. Defaults live in the specs only.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import typing
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from sweep import spec as s
from sweep.errors import ConfigError
from sweep.interventions import SPECS
from sweep.tasks import TASKS

OPTIONS: dict[str, dict[str, type[s.Spec]]] = {
    "model": {"pretrained": s.ModelSpec, "native": s.NativeModelSpec},
    "task": {kind: spec for kind, (spec, _) in TASKS.items()},
    "grid": {
        "grid": s.GridSpec,
        "edges": s.EdgeGridSpec,
        "paths": s.PathGridSpec,
        "circuit": s.CircuitGridSpec,
    },
    "intervention": dict(SPECS),
    "metric": {"metric": s.MetricSpec},
    "runner": {"local": s.LocalRunnerSpec, "ray": s.RayRunnerSpec},
    "store": {"store": s.StoreSpec},
    "analysis": {"analysis": s.AnalysisSpec},
    "sae": {"sae": s.SaeSpec},
}
"""Each group's spec classes, by the name of their schema (``base_NAME`` in conf/)."""


def schema(spec: type[s.Spec]) -> type:
    """A mutable dataclass with ``spec``'s fields, types and defaults, for Hydra."""
    if spec not in _SCHEMAS:
        _SCHEMAS[spec] = _twin(spec)
    return _SCHEMAS[spec]


_SCHEMAS: dict[type, type] = {}


def _twin(spec: type[s.Spec]) -> type:
    hints = typing.get_type_hints(spec)
    fields = []
    for f in dataclasses.fields(spec):
        if f.metadata.get("internal"):
            continue  # filled by the spec itself
        if f.default is not dataclasses.MISSING:
            default = MISSING if f.default == "???" else f.default
            fields.append((f.name, hints[f.name], dataclasses.field(default=default)))
        else:
            factory = f.default_factory
            fields.append((f.name, hints[f.name], dataclasses.field(default_factory=factory)))
    return dataclasses.make_dataclass(spec.__name__.removesuffix("Spec") + "Config", fields)


@dataclasses.dataclass
class SweepConfig:
    model: Any = MISSING
    task: Any = MISSING
    grid: Any = MISSING
    intervention: Any = MISSING
    metric: Any = MISSING
    runner: Any = MISSING
    store: Any = MISSING
    analysis: Any = MISSING
    sae: Any = MISSING


def register() -> None:
    """Put every schema where conf/'s defaults lists expect it (``base_NAME``)."""
    cs = ConfigStore.instance()
    cs.store(name="sweep_schema", node=SweepConfig)
    for group, options in OPTIONS.items():
        for name, spec in options.items():
            cs.store(group=group, name=f"base_{name}", node=schema(spec))


def _group_spec(cfg: DictConfig, group: str) -> s.Spec:
    node = cfg[group]
    twin = OmegaConf.get_type(node)
    spec = next(sp for sp in OPTIONS[group].values() if schema(sp) is twin)
    try:
        container = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", "") or group
        raise ConfigError(f"{key}: missing; give it a value on the command line") from None
    assert isinstance(container, dict)
    values: dict[str, Any] = {str(k): v for k, v in container.items()}
    kind = values.get("kind")
    if kind is not None and kind != spec.KIND:
        choices = ", ".join(OPTIONS[group])
        raise ConfigError(
            f"{group}.kind: {kind!r} is not one of {choices}; choose the kind with {group}=NAME"
        )
    return spec(**values)


def conf_dir() -> Path:
    """conf/ at the repository root (editable install) or shipped as sweep/conf (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError("patchsweep's conf/ directory is missing from this install")


def with_grid_defaults(overrides: list[str]) -> list[str]:
    """Path patching (``grid=paths``) patches by noising unless told otherwise, as the IOI
    paper's recipe does: the clean run, the sender's output from the corrupted one."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if "grid=paths" in overrides and not keys & {"intervention", "intervention.direction"}:
        return [*overrides, "intervention.direction=noise"]
    return overrides


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The config conf/ and the overrides make, without Hydra's run directory (and the
    grids' own defaults, ``with_grid_defaults``).

    Hydra's composition (the defaults tree, every schema merged) costs about 0.08 s, more
    than a small sweep's work: it runs once per choice of options (``model=native``,
    ``grid=edges``...) and conf/'s files, and each call applies its ``key=value``
    overrides to a copy with Hydra's own function. Anything else (``+group=...``,
    ``~key``, ``hydra.*``, sweeps) and any override Hydra refuses go the whole way, so
    the result and the messages are Hydra's."""
    given = with_grid_defaults(list(overrides or []))
    if any(_is_structural(o) for o in given):
        return _hydra_compose(given)
    choices = [o for o in given if _is_choice(o)]
    base = _compose_choices(tuple(choices), _conf_signature())
    values = [o for o in given if o not in choices]
    try:
        return _apply_values(base, values)
    except Exception:  # noqa: BLE001 - Hydra's own composition says what is wrong
        return _hydra_compose(given)


def _is_choice(override: str) -> bool:
    """``group=option``: a config group's option (these shape Hydra's defaults tree)."""
    return override.split("=", 1)[0] in OPTIONS


def _is_structural(override: str) -> bool:
    """An override that adds, deletes or moves a group (Hydra's defaults tree changes)."""
    key = override.split("=", 1)[0]
    bare = key.lstrip("+~")
    return (bare in OPTIONS and bare != key) or "/" in key or "@" in key


def _conf_signature() -> tuple[tuple[str, int], ...]:
    """conf/'s files and their modification times: an edited file composes afresh."""
    root = conf_dir()
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*.yaml")))


@functools.lru_cache(maxsize=64)
def _compose_choices(choices: tuple[str, ...], signature: object) -> DictConfig | None:
    """Hydra's composition of the options alone (None: Hydra refuses them, and says why
    when the whole list is composed)."""
    del signature  # part of the cache's key only
    from hydra.errors import HydraException

    try:
        cfg = _hydra_compose(list(choices))
    except (ConfigError, HydraException):
        return None
    OmegaConf.set_readonly(cfg, True)  # shared by every call: copies are handed out
    return cfg


def _apply_values(base: DictConfig | None, values: list[str]) -> DictConfig:
    """``base`` with ``key=value`` overrides applied as Hydra applies them."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if base is None:
        raise ValueError("the options do not compose alone")
    parsed = OverridesParser.create().parse_overrides(values)
    if any(o.is_sweep_override() or o.is_hydra_override() or o.is_delete() for o in parsed):
        raise ValueError("Hydra's own composition handles these")  # hydra.*, ~key, a,b
    cfg = copy.deepcopy(base)
    OmegaConf.set_readonly(cfg, None)  # as Hydra leaves it
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
    return cfg


def _hydra_compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    register()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except HydraException as e:  # Hydra's multi-line message, as ours: one line, the key
        raise ConfigError(hydra_message(e)) from None


def to_spec(cfg: DictConfig) -> s.SweepSpec:
    """The frozen, validated specs of a composed config (no model loads)."""
    parts = {g: _group_spec(cfg, g) for g in s.GROUPS}
    if isinstance(parts["grid"], s.CircuitGridSpec):  # its ranking: a store's or a file's
        from sweep.results.faithfulness import with_ranking

        parts["grid"] = with_ranking(parts["grid"])
    return s.SweepSpec(**parts)  # type: ignore[arg-type]


def hydra_message(e: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages, as one line naming the key (or the
    group option that does not exist, with the options there are)."""
    cause = e.__cause__ or e.__context__
    key = getattr(cause, "full_key", None)
    text = str(cause if key else e)
    if key and ("not in struct" in text or re.search(r"Key '\w+' not in", text)):
        return f"{key}: no such key; see every key with: python -m sweep --cfg job"
    if key:
        msg = getattr(cause, "msg", text).strip().splitlines()[0]
        if "is not a ListConfig, list or tuple" in msg:
            return (
                f"{key}: takes a list in brackets, even of one value: '{key}=[...]' (quoted "
                "for the shell, as in 'grid.receivers=[a1.*.k]')"
            )
        return f"{key}: {msg}"
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    missing = re.search(r"Could not find '([\w/]+)'", str(e))
    if missing:
        group, _, option = missing.group(1).partition("/")
        listed = lines[lines.index(next(x for x in lines if x.startswith("Available"))) + 1 :]
        options = [x for x in listed[: listed.index("Config search path:")] if "base_" not in x]
        return f"{group}={option}: no such option; choose from: {', '.join(options)}"
    return "; ".join(lines) if lines else type(e).__name__


def unparsed(override: str, e: BaseException) -> str:
    """An override Hydra's grammar cannot read, as one line saying how to quote it.

    Hydra reads a bare value as a restricted token: letters outside ASCII and most symbols
    need quotes; a value with spaces that the shell split into two arguments arrives as a
    second argument without ``=``.
    """
    key, eq, value = override.partition("=")
    if not eq:
        return (
            f"{override!r} is not KEY=VALUE; if it is the rest of a value with spaces, "
            "quote the whole value, e.g. \"store.path='my runs/sweep.zarr'\""
        )
    if value[:1] not in "'\"[{":
        quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return (
            f"{key}: Hydra cannot read {value!r} unquoted (letters outside ASCII, spaces and "
            f'symbols need quotes); write "{key}={quoted}" (the double quotes are for the '
            "shell, the single ones for Hydra)"
        )
    return f"{key}: {hydra_message(e)}"
