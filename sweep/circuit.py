"""``python -m sweep.circuit STORE [--sizes 10,30,100] [--ablation patch] [--file EDGES]
[KEY=VALUE ...]``: circuits of an edge store's top edges, and their faithfulness.

A thin front of ``grid=circuit``: the model, task and metrics come from STORE (an edge
store: exact, EAP or EAP-IG scores), the edges are ranked by its scores (or listed in
``--file``, best first), and the sweep runs like any other: the same runners, the same
resume (run the same command again), its own store (default ``STORE`` with
``.circuit.zarr`` for ``.zarr``; ``store.path=...`` to choose). KEY=VALUE overrides any
key, as ``python -m sweep`` takes them (``runner=ray``, ``grid.rank_metric=prob``...).
"""

from __future__ import annotations

import argparse
import sys

from omegaconf import DictConfig, OmegaConf

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
    """A value as Hydra's override grammar reads it whatever it holds (paths, URLs)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stored_config(store: str) -> DictConfig:
    """The resolved config a patchsweep store was made with."""
    from sweep.results.backends import backend_for
    from sweep.results.store import is_store, root_attrs

    backend = backend_for(store)
    backend.check_reachable()
    if not is_store(backend, key="STORE"):
        raise SweepError(f"STORE: {store}: no such store")
    cfg = OmegaConf.create(str(root_attrs(backend).get("config", "")))
    if not isinstance(cfg, DictConfig) or not all(g in cfg for g in TAKEN):
        raise SweepError(f"STORE: {store}: its config attribute is damaged or missing")
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
    # Composed twice: first to learn which keys the user set, then with the store's values
    # for the keys the user left alone (a value is set in the config, not re-parsed).
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    cfg = compose_config([*base, *overrides])
    for group in TAKEN:
        for key, value in have[group].items():
            if f"{group}.{key}" not in given and f"{group}" not in given:
                OmegaConf.update(cfg, f"{group}.{key}", value, merge=False)
    return cfg


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sweep.circuit", description=__doc__.split("\n")[0])
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
