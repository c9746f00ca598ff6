"""A circuit sweep's config from the edge store whose scores rank it: the store's model,
task and metrics, the ablation its scores were made with, then the user's overrides
(``python -m sweep.circuit STORE`` and ``python -m sweep grid=circuit grid.scores=STORE``
both compose it here)."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.errors import ConfigError, SweepError

ABLATIONS = ("patch", "zero", "mean", "resample")
TAKEN = ("model", "task", "metric")
"""The groups a circuit takes from its scores store."""


def default_path(store: str, ablation: str, file: str | None, extra: tuple[str, ...] = ()) -> str:
    """Next to the scores store: ``NAME.circuit.zarr`` (``-mean``, ``-file``... when so)."""
    stem = store.rstrip("/")
    stem = stem[: -len(".zarr")] if stem.endswith(".zarr") else stem
    tags = [t for t, on in ((ablation, ablation != "patch"), ("file", file is not None)) if on]
    return f"{stem}.circuit{''.join('-' + t for t in [*tags, *extra])}.zarr"


def quoted(value: str) -> str:
    """A value as Hydra's override grammar reads it whatever it holds (paths, URLs):
    quoted, its quotes escaped; a backslash stays as it is unless it comes before a quote
    or the end (Hydra's rule), where it is doubled."""
    doubled = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"


def stored_config(store: str) -> DictConfig:
    """The resolved config a patchsweep store was made with."""
    from sweep.store.backends import backend_for
    from sweep.store.layout import is_store, root_attrs

    backend = backend_for(store)
    backend.check_reachable()
    if not is_store(backend, key="STORE"):
        raise SweepError(f"STORE: {store}: no such store")
    damaged = SweepError(f"STORE: {store}: its config attribute is damaged or missing")
    try:
        cfg = OmegaConf.create(str(root_attrs(backend).get("config", "")))
    except Exception:  # yaml's and OmegaConf's own parse errors
        raise damaged from None
    if not isinstance(cfg, DictConfig) or not all(g in cfg for g in TAKEN):
        raise damaged
    return cfg


def scored_by(cfg: DictConfig) -> str:
    """What a scores store's values patched, from its config: ``patch noise``, ``patch
    denoise``, ``zero``, ``mean`` or ``resample`` (EAP's: its source)."""
    from sweep.results.analysis import ablation_in

    return ablation_in(cfg.get("intervention") or {})


def fitting(scored: str) -> str:
    """The circuit ablation that fits scores made so: patching (either direction) and EAP
    of the other run, the corrupted run's outputs; an ablation, the same ablation."""
    return "patch" if scored.startswith("patch") else scored


def ablation_notes(store: str, scored: str, chosen: str) -> list[str]:
    """One line when the circuit ablates otherwise than the scores that rank it."""
    if chosen != fitting(scored):
        match = {"patch": "patching or EAP with intervention.direction=noise"}.get(
            chosen, f"grid=edges intervention={chosen}, or intervention=eap "
            f"intervention.ablation={chosen}"
        )  # fmt: skip
        return [
            f"{store} scores edges by {scored}, but this circuit ablates by {chosen}: the "
            f"ranking was not made for this ablation; rank by {match} to match (or leave "
            "--ablation out to ablate as the scores did)"
        ]
    if scored == "patch denoise":
        return [
            f"{store} scores edges by denoising (the clean run's outputs into the corrupted "
            "run), but a circuit ablates in the clean run (the corrupted run's outputs into "
            "it): rank by noising scores (intervention.direction=noise) to match"
        ]
    return []


def circuit_config(
    store: str,
    sizes: str | None,
    ablation: str | None,
    file: str | None,
    overrides: list[str],
    flags: dict[str, Any] | None = None,
) -> tuple[DictConfig, list[str]]:
    """The ``grid=circuit`` config: STORE's model, task and metrics, the ablation its
    scores were made with (unless ``ablation``), then ``overrides``; and the notes to
    show (an ablation that does not fit the scores)."""
    from sweep.config import compose

    flags = flags or {}
    have = stored_config(store)
    scored = scored_by(have) if file is None else "patch noise"
    chosen = ablation or fitting(scored)
    model = "native" if "native" in have.model else "hf"
    rank = f"grid.file={quoted(file)}" if file is not None else f"grid.scores={quoted(store)}"
    tags = tuple(t for t, on in (("signed", flags.get("signed")),
                                 ("unpruned", flags.get("no_prune"))) if on)  # fmt: skip
    out = quoted(default_path(store, chosen, file, tags))
    base = [f"model={model}", f"task={have.task.kind}", "grid=circuit", rank,
            f"intervention={chosen}", f"store.path={out}"]  # fmt: skip
    if chosen == "patch":
        base.append("intervention.direction=noise")
    if sizes is not None:
        base.append(f"grid.sizes=[{sizes}]")
    if flags.get("thresholds"):
        base.append(f"grid.thresholds=[{flags['thresholds']}]")
    if flags.get("signed"):
        base.append("grid.rank_by=signed")
    if flags.get("no_prune"):
        base.append("grid.prune=false")
    # The store's values go in after composing, key by key, for every key the user's
    # overrides leave alone (a value is set in the config, not re-parsed by Hydra).
    given = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    cfg = compose([*base, *overrides])
    # An ablation's own keys (mean's reference, resample's samples) as the scores had them.
    same = chosen in ("zero", "mean", "resample") and chosen == have.intervention.kind
    taken = TAKEN + (("intervention",) if same else ())
    for key, value in _leaves(have, taken):
        if any(key == g or key.startswith(g + ".") for g in given):
            continue
        try:
            # A native model's config is a free dict: keys added with + are kept too.
            free = key.startswith("model.native.")
            OmegaConf.update(cfg, key, value, merge=False, force_add=free)
        except Exception:  # OmegaConf's own errors: a key or value this schema refuses
            raise SweepError(
                f"STORE: {store} was made with {key}={value!r}, which this patchsweep "
                f"does not take (another version made it); give the key on the command "
                f"line (python -m sweep.circuit STORE {key}=...)"
            ) from None
    return cfg, ([] if file is not None else ablation_notes(store, scored, chosen))


def compose_circuit(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """``python -m sweep grid=circuit grid.scores=STORE ...`` as ``python -m sweep.circuit
    STORE ...``: the store's model, task, metrics and ablation unless the overrides give
    them (``intervention=KIND`` is the ablation). A file's circuit without scores ablates
    by the corrupted run's outputs unless an intervention is given."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sweep.config import compose, unparsed

    parser, rest = OverridesParser.create(), []
    picked: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0]
        if key in ("grid", "grid.scores", "grid.file", "intervention") and "=" in o:
            try:
                picked[key] = str(parser.parse_override(o).value())
            except Exception:  # Hydra's grammar errors: the value needs quotes
                raise ConfigError(unparsed(o, ValueError(o))) from None
        else:
            rest.append(o)
    ablation = picked.get("intervention")
    if "grid.scores" in picked:
        file = picked.get("grid.file")
        flags = {"signed": "grid.rank_by=signed" in rest,
                 "no_prune": any(o.lower() == "grid.prune=false" for o in rest)}  # fmt: skip
        return circuit_config(picked["grid.scores"], None, ablation, file, rest, flags)
    base = ["grid=circuit", *(f"grid.file={quoted(picked['grid.file'])}"
                              for _ in [0] if "grid.file" in picked)]  # fmt: skip
    base.append(f"intervention={ablation or 'patch'}")
    if (ablation or "patch") == "patch" and not any(
        o.startswith("intervention.direction=") for o in rest
    ):
        base.append("intervention.direction=noise")
    return compose([*base, *rest]), []


def _leaves(cfg: DictConfig, groups: tuple[str, ...]) -> list[tuple[str, object]]:
    """Every leaf key of ``groups`` (``model.native.n_layers``) with its value."""
    out: list[tuple[str, object]] = []

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, DictConfig):
            for k in node:
                walk(f"{prefix}.{k!s}", node[k])
        else:
            out.append((prefix, OmegaConf.to_container(node) if isinstance(node, ListConfig)
                        else node))  # fmt: skip

    for g in groups:
        walk(g, cfg[g])
    return out
