"""``python -m sweep.circuit STORE [--sizes 10,30,100] [--ablation patch] [--file EDGES]
[KEY=VALUE ...]``: circuits of an edge store's top edges, and their faithfulness.

A thin front of ``grid=circuit``: the model, task and metrics come from STORE (an edge
store: exact, EAP or EAP-IG scores), the edges are ranked by its scores (or listed in
``--file``, best first), and the sweep runs like any other: the same runners, the same
resume (run the same command again), its own store (default ``STORE`` with
``.circuit.zarr`` for ``.zarr``; ``store.path=...`` to choose). KEY=VALUE overrides any
key, as ``python -m sweep`` takes them (``runner=ray``, ``grid.rank_metric=prob``,
``task.seed=1`` to measure the circuit on held-out prompts), except the model's: a circuit
runs on the model its scores are of.
"""

from __future__ import annotations

import argparse
import re
import sys

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.cli import fail, run_and_report
from sweep.errors import SweepError
from sweep.interrupts import Signalled, catching

ABLATIONS = ("patch", "zero", "mean", "resample")
TAKEN = ("model", "task", "metric")
"""The groups a circuit takes from its scores store."""


def default_path(store: str, ablation: str, file: str | None) -> str:
    """Next to the scores store: ``NAME.circuit.zarr`` (``-mean``, ``-file`` when so)."""
    stem = store.rstrip("/")
    stem = stem[: -len(".zarr")] if stem.endswith(".zarr") else stem
    tags = [t for t, on in ((ablation, ablation != "patch"), ("file", file is not None)) if on]
    return f"{stem}.circuit{''.join('-' + t for t in tags)}.zarr"


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


def circuit_config(
    store: str, sizes: str | None, ablation: str, file: str | None, overrides: list[str]
) -> DictConfig:
    """The ``grid=circuit`` config: STORE's model, task and metrics, then ``overrides``."""
    from sweep.driver import compose_config

    have = stored_config(store)
    model = "native" if "native" in have.model else "hf"
    rank = f"grid.file={quoted(file)}" if file is not None else f"grid.scores={quoted(store)}"
    out = quoted(default_path(store, ablation, file))
    base = [f"model={model}", f"task={have.task.kind}", "grid=circuit", rank,
            f"intervention={ablation}", f"store.path={out}"]  # fmt: skip
    if ablation == "patch":
        base.append("intervention.direction=noise")
    if sizes is not None:
        base.append(f"grid.sizes=[{sizes}]")
    # The store's values go in after composing, key by key, for every key the user's
    # overrides leave alone (a value is set in the config, not re-parsed by Hydra).
    given = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    cfg = compose_config([*base, *overrides])
    for key, value in _leaves(have, TAKEN):
        if any(key == g or key.startswith(g + ".") for g in given):
            continue
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception:  # OmegaConf's own errors: a key or value this schema refuses
            raise SweepError(
                f"STORE: {store} was made with {key}={value!r}, which this patchsweep "
                f"does not take (another version made it); give the key on the command "
                f"line (python -m sweep.circuit STORE {key}=...)"
            ) from None
    return cfg


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m sweep.circuit",
        usage="python -m sweep.circuit STORE [--sizes ...] [--ablation ...] [--file ...] "
        "[KEY=VALUE ...]",
        description="Circuits of an edge store's top edges, every other edge ablated, and "
        "their faithfulness. KEY=VALUE overrides any key but the model's, as python -m "
        "sweep takes them (runner=ray, store.path=..., task.seed=1 for held-out prompts).",
    )
    p.add_argument("store", help="an edge store (grid=edges, exact or intervention=eap)")
    p.add_argument(
        "--sizes",
        default=None,
        help="circuit sizes in edges, e.g. 10,30,100 (default: 1, 3, 10, 30...)",
    )
    p.add_argument("--ablation", default="patch", choices=ABLATIONS,
                   help="what an edge outside the circuit carries: the corrupted run's output "
                   "(patch, the default) or a zero, mean or resample ablation")  # fmt: skip
    p.add_argument("--file", default=None, help="rank by this file's edges instead (one per "
                   "line, best first: a0.h1 -> a1.h0.k)")  # fmt: skip
    args, overrides = p.parse_known_args(argv)
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        p.error(f"unrecognized arguments: {' '.join(flags)}")
    with catching():
        try:
            cfg = circuit_config(args.store, args.sizes, args.ablation, args.file, overrides)
        except SweepError as e:
            fail(str(e))
        except Signalled as e:
            fail("interrupted before the sweep started; nothing was written", e.exit_code)
        run_and_report(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
