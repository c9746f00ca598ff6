"""``python -m sweep [overrides]``: a thin Hydra wrapper around ``sweep.driver.run_config``.

Every mistake a user can make on the command line ends in one line on stderr,
``patchsweep: error: ...``, naming the key or file, and a non-zero exit: the overrides of
every job are composed and checked before Hydra starts, so a wrong key, type or value
fails before any model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from sweep.errors import Interrupted, SweepError
from sweep.interrupts import Signalled, catching

if TYPE_CHECKING:
    from sweep.driver import SweepSummary

GROUPS = ("model", "task", "grid", "intervention", "metric", "runner", "store", "analysis", "sae")


def fail(message: str, code: int = 2) -> None:
    print(f"patchsweep: error: {message}", file=sys.stderr)
    sys.exit(code)


def _app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        from sweep.multirun import job_store, sweep_of

        varied = sweep_of(_user_overrides(sys.argv[1:])).varied
        cfg.store.path = job_store(cfg, list(hc.overrides.task), int(hc.job.num), varied)
    run_and_report(cfg)


def run_and_report(cfg: DictConfig) -> None:
    """Run (or resume) the sweep, print what it found and draw its pictures; every
    failure is one line and an exit code (``sweep.circuit`` shares it)."""
    from sweep.driver import run_config

    try:
        summary = run_config(cfg)
    except Interrupted as e:
        fail(str(e), e.exit_code)
    except SweepError as e:
        fail(str(e))
    try:
        need = cfg.analysis.min_prompts
        print(report(summary, min_prompts=need))
        if cfg.store.plots:
            from sweep.results.plot import render  # matplotlib loads only for pictures

            out = render(summary.path, min_prompts=need)
            print(f"pictures: {out / 'index.html'} and PNGs in {out}")
    except Signalled as e:
        fail(
            f"interrupted after the sweep: {summary.path} is complete; draw its pictures "
            f"with python -m sweep.plot {summary.path}",
            e.exit_code,
        )


def report(s: SweepSummary, top: int = 5, min_prompts: int | None = None) -> str:
    """A short, human summary: what ran, the baselines, the cells with the largest effect."""
    from sweep.results.report import results_lines
    from sweep.store.read import open_dataset

    lost = f" ({s.units_lost} recomputed: chunk files were missing)" if s.units_lost else ""
    rate = s.cells_run / max(s.sweep_seconds, 1e-9)
    cells = "circuits" if s.circuits else "edges" if s.edges else "cells"
    lines = [
        f"store: {s.path}",
        f"units: {s.units_run} computed this run{lost}, {s.units_total} in the sweep; "
        f"{s.cells_run} {cells} in {s.sweep_seconds:.1f} s ({rate:.0f} {cells}/s; "
        f"{s.seconds:.1f} s with loading) on {s.workers} worker(s){_nodes(s)}, "
        f"{s.worker_restarts} replaced{_lost(s)}; {s.engine} engine",
        f"prompt blocks of {s.prompt_block}; cached runs built per worker: "
        f"{', '.join(map(str, s.cache_builds)) or '-'}",
    ]
    return "\n".join(lines + results_lines(open_dataset(s.path), top, min_prompts))


def _nodes(s: SweepSummary) -> str:
    """Where Ray's workers ran: each node and how many workers it held."""
    if not s.worker_nodes:
        return ""
    counts = {n: s.worker_nodes.count(n) for n in dict.fromkeys(s.worker_nodes)}
    return " on nodes " + ", ".join(f"{n} (x{c})" if c > 1 else n for n, c in counts.items())


def _lost(s: SweepSummary) -> str:
    lost = f"{s.workers_lost} lost with their node" if s.workers_lost else ""
    again = f"{s.jobs_requeued} unit(s) sent again" if s.jobs_requeued else ""
    both = ", ".join(x for x in (lost, again) if x)
    return f" ({both})" if both else ""


def help_text() -> str:
    """The groups and their options (from conf/), with the keys users set most."""
    from sweep.driver import conf_dir

    root = conf_dir()
    lines = [
        "patchsweep: activation-patching and ablation sweeps into a resumable zarr store",
        "",
        "usage: python -m sweep [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--cfg job]",
        "",
        "Config groups (GROUP=OPTION; default marked *):",
    ]
    defaults = _defaults(root)
    for group in GROUPS:
        options = sorted(p.stem for p in (root / group).glob("*.yaml"))
        shown = [f"{o}*" if o == defaults.get(group) else o for o in options]
        lines.append(f"  {group:<13} {', '.join(shown)}")
    lines += [
        "",
        "Keys: python -m sweep [GROUP=OPTION ...] --cfg job   prints every key with its value.",
        "Examples:",
        "  python -m sweep                                   the shipped induction demo",
        "  python -m sweep model=native task=ioi grid.components=[resid_pre,z]",
        "  python -m sweep model=native task=ioi grid.positions=[S1,IO,S2,END]  named positions",
        "  python -m sweep model=hf model.name=gpt2 task=prompts task.path=my.jsonl",
        "  python -m sweep grid=edges 'grid.receivers=[a1.*.k,logits]'  exact edge patching",
        "  python -m sweep grid=paths 'grid.receivers=[a1.*.k]'          path patching",
        "  python -m sweep grid=edges intervention=eap intervention.steps=5  EAP-IG scores",
        "  python -m sweep grid=paths 'grid.receivers=[a1.*.k]' 'grid.positions=[-1]'  one token",
        "  python -m sweep grid=edges intervention=eap intervention.ablation=mean  EAP, mean",
        "  python -m sweep.circuit STORE --sizes 10,30,100  circuits of an edge store's top edges",
        "  python -m sweep.circuit STORE --sizes mib --signed   MIB's sizes, signed ranking",
        "  python -m sweep.circuit CIRCUIT_STORE --export c.json --size 20   EAP-IG's JSON",
        "  python -m sweep -m task.n_prompts=8,16            one store per job",
        "  python -m sweep.status STORE [--verify]           progress and health of a store",
        "  python -m sweep.plot STORE                        heatmaps and an HTML page",
        "",
        "Hydra's own options: python -m sweep --hydra-help",
    ]
    return "\n".join(lines)


def _defaults(root: Path) -> dict[str, str]:
    import yaml

    data = yaml.safe_load((root / "config.yaml").read_text())
    out = {}
    for d in data.get("defaults", []):
        if isinstance(d, dict):
            out.update({str(k): str(v) for k, v in d.items()})
    return out


def check_overrides(argv: list[str]) -> None:
    """Compose every job's config and build its spec, so that a bad key, type or value
    fails here in one line, before Hydra starts and before any model loads. Under ``-m``,
    write the manifest of every job's store (``sweep.multirun``) before the first runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from sweep.config import to_spec, unparsed
    from sweep.driver import compose_config

    overrides = _user_overrides(argv)
    multirun = bool({"-m", "--multirun"} & set(argv))
    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except HydraException as e:
            raise SweepError(unparsed(o, e)) from None
    parsed = parser.parse_overrides(overrides)
    first, variants = [], []
    for p in parsed:
        line = str(p.input_line)
        head = line.split("=", 1)[0]
        if p.is_sweep_override():
            values = list(p.sweep_string_iterator())
            first.append(f"{head}={values[0]}")
            variants += [(len(first) - 1, f"{head}={v}") for v in values[1:]]
        else:
            first.append(line)
    if not multirun:
        jobs = [first] + [first[:i] + [v] + first[i + 1 :] for i, v in variants]
        for job in jobs:
            to_spec(compose_config(job))  # a ConfigError names the key
        return
    from sweep.multirun import job_store, manifest_path, sweep_of, write_manifest

    sweep = sweep_of(overrides)
    stores, bases = [], []
    for num, one in enumerate(sweep.jobs):
        cfg = compose_config(list(one))
        to_spec(cfg)  # a ConfigError names the key
        stores.append(job_store(cfg, list(one), num, sweep.varied))
        bases.append(str(cfg.store.path))
    write_manifest(manifest_path(bases[0]), sweep, stores, ["python -m sweep", *argv])


def _user_overrides(argv: list[str]) -> list[str]:
    """The command's overrides, without Hydra's own (``hydra.*``) and its flags."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    return [o for o in args.overrides if not o.lstrip("+~").startswith("hydra")]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return
    with catching():  # Ctrl-C or SIGTERM at any moment: one line, exit 130 or 143
        try:
            _main(argv)
        except Signalled as e:
            fail("interrupted before the sweep started; nothing was written", e.exit_code)


def _main(argv: list[str]) -> None:
    from sweep.config import with_grid_defaults

    argv = with_grid_defaults(argv)
    hydra_only = {"--cfg", "-c", "--info", "--shell-completion", "-sc", "--hydra-help"}
    multirun = bool({"-m", "--multirun"} & set(argv))
    if "grid=circuit" in argv and not multirun and not hydra_only & set(argv):
        return _circuit(_user_overrides(argv))
    try:
        if not hydra_only & set(argv):
            check_overrides(argv)
    except SweepError as e:
        fail(str(e))
    import hydra

    from sweep import config
    from sweep.driver import conf_dir

    config.register()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_app)()


def _circuit(overrides: list[str]) -> None:
    """``grid=circuit``: as ``python -m sweep.circuit`` runs it (the scores store's model,
    task, metrics and ablation), without Hydra's own run."""
    from sweep.circuit_config import compose_circuit

    try:
        cfg, notes = compose_circuit(overrides)
    except SweepError as e:
        fail(str(e))
    run_with_notes(cfg, notes)


def run_with_notes(cfg: DictConfig, notes: list[str]) -> None:
    """Check the config, say the notes, then run and report as ``python -m sweep`` does."""
    from sweep.config import to_spec

    try:
        to_spec(cfg)  # a config that cannot run fails first, without notes
    except SweepError as e:
        fail(str(e))
    for note in notes:
        print(f"patchsweep: note: {note}", file=sys.stderr)  # noqa: T201
    run_and_report(cfg)


if __name__ == "__main__":
    main()
