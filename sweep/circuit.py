"""``python -m sweep.circuit STORE [--sizes 10,30,100] [--ablation mean] [--file EDGES]
[KEY=VALUE ...]``: circuits of an edge store's top edges, and their faithfulness.

A thin front of ``grid=circuit``: the model, task and metrics come from STORE (an edge
store: exact, EAP or EAP-IG scores), the edges are ranked by its scores (or listed in
``--file``, best first), the edges outside a circuit are ablated as the scores were made
(the corrupted run's outputs for patching and EAP scores, their mean for mean ablation...),
and the sweep runs like any other: the same runners, the same resume (run the same command
again; more ``--sizes`` add to the store), its own store (default ``STORE`` with
``.circuit.zarr`` for ``.zarr``; ``store.path=...`` to choose). KEY=VALUE overrides any key,
as ``python -m sweep`` takes them (``runner=ray``, ``grid.rank_metric=prob``, ``task.seed=1``
to measure the circuit on held-out prompts), except the model's: a circuit runs on the
model its scores are of. ``python -m sweep grid=circuit grid.scores=STORE`` is the same.

``python -m sweep.circuit CIRCUIT_STORE --export FILE [--size K]`` writes one circuit of a
circuit store as JSON (EAP-IG's and MIB's format) or as an edge file (``--file``'s).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.errors import ConfigError, SweepError
from sweep.interrupts import Signalled, catching

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
    from sweep.results.backends import backend_for
    from sweep.results.store import is_store, root_attrs

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

    from sweep.config import compose

    parser, rest = OverridesParser.create(), []
    picked: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0]
        if key in ("grid", "grid.scores", "grid.file", "intervention") and "=" in o:
            try:
                picked[key] = str(parser.parse_override(o).value())
            except Exception:  # Hydra's grammar errors: the value needs quotes
                from sweep.cli import _unparsed

                raise ConfigError(_unparsed(o, ValueError(o))) from None
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


def sizes_arg(text: str | None) -> str | None:
    """``--sizes``: edge counts and fractions as given, or ``mib`` for MIB's fractions."""
    if text is None or text.strip().lower() != "mib":
        return text
    from sweep.edges.circuit import MIB_FRACTIONS

    return ",".join(f"{f:g}" for f in MIB_FRACTIONS if f < 1)  # 1: the whole graph, always


def export(store: str, out: str, size: int | None) -> str:
    """Write one circuit of a circuit store to ``out`` (``.json``: EAP-IG's format; else
    the edge-file format ``--file`` reads); what was written, in words."""
    from sweep.results.circuit import check_circuit, write_circuit
    from sweep.results.store import open_results

    ds = open_results(store)
    try:
        check_circuit(ds)
    except ValueError:
        raise SweepError(
            f"STORE: {store} is not a circuit store; --export writes a circuit of one "
            "(python -m sweep.circuit SCORES_STORE makes it)"
        ) from None
    return write_circuit(ds, out, size)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m sweep.circuit",
        usage="python -m sweep.circuit STORE [--sizes ...] [--threshold ...] [--ablation ...] "
        "[--signed] [--no-prune] [--file ...] [KEY=VALUE ...]\n"
        "       python -m sweep.circuit CIRCUIT_STORE --export FILE [--size K]",
        description="Circuits of an edge store's top edges, every other edge ablated, and "
        "their faithfulness. KEY=VALUE overrides any key but the model's, as python -m "
        "sweep takes them (runner=ray, store.path=..., task.seed=1 for held-out prompts).",
    )
    p.add_argument("store", help="an edge store (grid=edges, exact or intervention=eap); "
                   "with --export, a circuit store")  # fmt: skip
    p.add_argument("--sizes", default=None, help="circuit sizes: edge counts (10,30,100), "
                   "fractions of the graph's edges (0.01,0.1), or mib (MIB's fractions, "
                   "0.001 to 1); default 1, 3, 10, 30... Later sizes add to the store")  # fmt: skip
    p.add_argument("--threshold", default=None, help="circuits of the edges whose |score| "
                   "(--signed: signed score) reaches each threshold, in the metric's units, "
                   "e.g. 0.1,0.05")  # fmt: skip
    p.add_argument("--ablation", default=None, choices=ABLATIONS,
                   help="what an edge outside the circuit carries: the corrupted run's output "
                   "(patch) or a zero, mean or resample ablation; default: as the scores were "
                   "made (patch for patching and EAP scores)")  # fmt: skip
    p.add_argument("--signed", action="store_true", help="rank by the signed score: edges "
                   "that carry the behaviour first, those against it last")  # fmt: skip
    p.add_argument("--no-prune", action="store_true", help="keep the edges of a top K that "
                   "lie on no path from embed to the logits (default: leave them out)")  # fmt: skip
    p.add_argument("--file", default=None, help="rank by this file's edges instead (one per "
                   "line, best first: a0.h1 -> a1.h0.k)")  # fmt: skip
    p.add_argument("--export", default=None, metavar="FILE", help="write a circuit of the "
                   "circuit store STORE to FILE: .json (EAP-IG's and MIB's format) or an edge "
                   "file (one edge per line, as --file reads)")  # fmt: skip
    p.add_argument("--size", type=int, default=None, help="with --export: the circuit's size "
                   "(default: the smallest with faithfulness >= 0.8)")  # fmt: skip
    args, overrides = p.parse_known_args(argv)
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        p.error(f"unrecognized arguments: {' '.join(flags)}")
    with catching():
        try:
            if args.export is not None:
                print(export(args.store, args.export, args.size))  # noqa: T201
                return
            options = {"thresholds": args.threshold, "signed": args.signed,
                       "no_prune": args.no_prune}  # fmt: skip
            cfg, notes = circuit_config(args.store, sizes_arg(args.sizes), args.ablation,
                                        args.file, overrides, options)  # fmt: skip
        except SweepError as e:
            fail(str(e))
        except Signalled as e:
            fail("interrupted before the sweep started; nothing was written", e.exit_code)
        run_notes(cfg, notes)


def run_notes(cfg: DictConfig, notes: list[str]) -> None:
    """Check the config, say the notes, then run and report as ``python -m sweep`` does."""
    from sweep.cli import run_and_report
    from sweep.config import to_spec

    try:
        to_spec(cfg)  # a config that cannot run fails first, without notes
    except SweepError as e:
        fail(str(e))
    for note in notes:
        print(f"patchsweep: note: {note}", file=sys.stderr)  # noqa: T201
    run_and_report(cfg)


def fail(message: str, code: int = 2) -> None:
    from sweep.cli import fail as cli_fail

    cli_fail(message, code)


if __name__ == "__main__":
    main(sys.argv[1:])
