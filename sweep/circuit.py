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
import sys

from sweep.circuit_config import ABLATIONS, circuit_config
from sweep.cli import fail, run_with_notes
from sweep.errors import SweepError
from sweep.interrupts import Signalled, catching


def sizes_arg(text: str | None) -> str | None:
    """``--sizes``: edge counts and fractions as given, or ``mib`` for MIB's fractions."""
    if text is None or text.strip().lower() != "mib":
        return text
    from sweep.edges.ranking import MIB_FRACTIONS

    return ",".join(f"{f:g}" for f in MIB_FRACTIONS if f < 1)  # 1: the whole graph, always


def export(store: str, out: str, size: int | None) -> str:
    """Write one circuit of a circuit store to ``out`` (``.json``: EAP-IG's format; else
    the edge-file format ``--file`` reads); what was written, in words."""
    from sweep.results.faithfulness import check_circuit, write_circuit
    from sweep.store.read import open_dataset

    ds = open_dataset(store)
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
        run_with_notes(cfg, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
