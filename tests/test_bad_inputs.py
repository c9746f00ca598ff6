"""Every bad input a new user tried: one line on stderr naming the key or file, a non-zero
exit, no traceback, and every file that existed before unchanged.

Each case runs the real command in a fresh process, in a directory holding a task file,
a folder of notes, a plain file, a finished store and damaged copies of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zarr
from helpers import file_hashes, ioi_rows

import sweep
from sweep.store.status import done_marks
from tests.zygote import Forked, python_m, python_popen

BASE = {
    "model": "native",
    "task": "ioi",
    "task.n_prompts": "2",
    "grid.components": "[resid_pre]",
    "store.plots": "false",
    "runner.progress": "false",
    "store.path": "out.zarr",
}
TASK = "bad.jsonl"


@dataclass(frozen=True)
class Case:
    id: str
    args: dict[str, str | None] = field(default_factory=dict)
    """Overrides merged into BASE (None removes a key)."""
    names: str = ""
    """What the one error line must name."""
    task: str | bytes | None = None
    """Contents of bad.jsonl (rows as JSON Lines text, or raw bytes)."""
    module: str = "sweep"
    argv: tuple[str, ...] | None = None
    """Arguments for ``module`` instead of the sweep overrides."""
    setup: Callable[[Path], None] | None = None
    extra: tuple[str, ...] = ()


def _rows(**change: object) -> str:
    rows = ioi_rows(2)
    rows[0] = {**rows[0], **change}
    return "".join(json.dumps(r) + "\n" for r in rows)


def _prompts(**kw: str | None) -> dict[str, str | None]:
    return {"task": "prompts", "task.n_prompts": None, "task.path": TASK, **kw}


def _damage_root(tmp: Path) -> None:
    shutil.copytree(tmp / "good.zarr", tmp / "hurt.zarr")
    meta = tmp / "hurt.zarr" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:100])


def _unfinished(tmp: Path) -> None:
    """A store no unit of which is done yet (as one created and stopped at once)."""
    shutil.copytree(tmp / "good.zarr", tmp / "empty.zarr")
    group = zarr.open_group(str(tmp / "empty.zarr"), mode="r+")
    for name in group.attrs["components"]:
        shutil.rmtree(tmp / "empty.zarr" / name / "c")
    for marks in ("done", "blocks"):
        group["_patchsweep"][marks][:] = 0


def _future(tmp: Path) -> None:
    shutil.copytree(tmp / "good.zarr", tmp / "future.zarr")
    zarr.open_group(str(tmp / "future.zarr"), mode="r+").attrs["patchsweep_format"] = 99


def _foreign(tmp: Path) -> None:
    shutil.copytree(tmp / "good.zarr", tmp / "mixed.zarr")
    (tmp / "mixed.zarr" / "my-notes.txt").write_text("keep me")


def _grown_task(tmp: Path) -> None:
    """A store made from bad.jsonl (its fingerprint's task part is that file's), then a
    line appended to the file."""
    from sweep.tasks.prompts import PromptsTaskSpec

    shutil.copytree(tmp / "good.zarr", tmp / "grown.zarr")
    group = zarr.open_group(str(tmp / "grown.zarr"), mode="r+")
    fp = json.loads(group.attrs["patchsweep_fingerprint"])
    fp["task"] = PromptsTaskSpec(path=str(tmp / TASK)).identity()
    group.attrs["patchsweep_fingerprint"] = json.dumps(fp, sort_keys=True)
    with (tmp / TASK).open("a") as f:
        f.write(json.dumps(ioi_rows(3)[2]) + "\n")


def _readonly_dir() -> str | None:
    """A directory even root cannot write in (a read-only mount), if this machine has one."""
    for d in ("/sys", "/proc/sys"):
        try:
            Path(d, ".patchsweep-probe").touch()
        except OSError:
            return d
        Path(d, ".patchsweep-probe").unlink()
    return None


CASES = [
    # Config keys and values: refused before any model loads.
    Case("unknown key", {"grid.colour": "red"}, "grid.colour"),
    Case("wrong type", {"task.n_prompts": "many"}, "task.n_prompts"),
    Case("unquoted non-ASCII path", {"store.path": "runs/é.zarr"}, "store.path='runs/é.zarr'"),
    Case("unquoted task path", {"task": "prompts", "task.path": "tâche.jsonl"}, "task.path='"),
    Case(
        "value split by the shell",
        {"store.path": "my"},
        "quote the whole value",
        extra=("runs/s.zarr",),
    ),
    Case("unknown group option", {"intervention": "scramble"}, "intervention=scramble"),
    Case("unknown component", {"grid.components": "[attn_in]"}, "grid.components"),
    Case("unknown metric", {"metric.names": "[accuracy]"}, "metric.names"),
    Case("unknown dtype", {"model.dtype": "float8"}, "model.dtype"),
    Case("zero chunk", {"store.chunk_kb": "0"}, "store.chunk_kb"),
    Case("empty layers", {"grid.layers": "[]"}, "grid.layers"),
    Case("repeated layers", {"grid.layers": "[0,0]"}, "grid.layers"),
    Case("negative head", {"grid.heads": "[-1]"}, "grid.heads"),
    Case("bad direction", {"intervention.direction": "sideways"}, "intervention.direction"),
    Case(
        "zero samples",
        {"intervention": "resample", "intervention.samples": "0"},
        "intervention.samples",
    ),  # fmt: skip
    Case(
        "negative top k",
        {"intervention": "atp", "intervention.verify_top_k": "-1"},
        "intervention.verify_top_k",
    ),  # fmt: skip
    Case(
        "kl atp noise",
        {"intervention": "atp", "intervention.direction": "noise", "metric.names": "[kl]"},
        "metric.names",
    ),  # fmt: skip
    Case("zero memory", {"runner.memory_mb": "0"}, "runner.memory_mb"),
    Case("unknown engine", {"runner.engine": "turbo"}, "runner.engine"),
    Case("unknown device", {"model.device": "tpu"}, "model.device"),
    Case("zero lease timeout", {"store.lease_timeout_s": "0"}, "store.lease_timeout_s"),
    Case("hub id under native", {"model.name": "gpt2"}, "model.name"),
    Case("native under induction", {"model": "induction", "model.name": "native"}, "model.name"),
    Case("task path missing", _prompts(**{"task.path": None}), "task.path"),
    Case("no such task file", _prompts(**{"task.path": "nope.jsonl"}), "task.path"),
    Case("task path is a folder", _prompts(**{"task.path": "notes"}), "task.path"),
    Case(
        "no such reference",
        {"intervention": "mean", "intervention.reference": "nope.jsonl"},
        "intervention.reference",
    ),  # fmt: skip
    Case(
        "bad ray address", {"runner": "ray", "runner.address": "'not an address'"}, "runner.address"
    ),  # fmt: skip
    Case(
        "bad value in a multirun", {"task.n_prompts": "2,zero"}, "task.n_prompts", extra=("-m",)
    ),  # fmt: skip
    # Task files: read and checked before the model loads, or named by line after.
    Case("not UTF-8", _prompts(), TASK, task=b'{"clean": "caf\xe9"}\n'),
    Case("bad JSON", _prompts(), f"{TASK}:3", task=_rows() + "{oops\n"),
    Case(
        "missing field",
        _prompts(),
        f"{TASK}:1",
        task='{"clean": "a", "corrupted": "b", "answer": " c"}\n',
    ),  # fmt: skip
    Case("empty task file", _prompts(), TASK, task="\n\n"),
    Case("not an object", _prompts(), f"{TASK}:1", task="[1, 2]\n"),
    Case("answer equals wrong", _prompts(), f"{TASK}:1", task=_rows(wrong=" Mary", answer=" Mary")),
    Case(
        "longer than n_ctx",
        _prompts(),
        f"{TASK}:1",
        task=_rows(clean=" Mary" * 200, corrupted=" John" * 200),
    ),  # fmt: skip
    Case(
        "answer of several tokens and logit_diff",
        _prompts(),
        f"{TASK}:1: answer ' Maryanne Smithson' is",
        task=_rows(answer=" Maryanne Smithson"),
    ),  # fmt: skip
    Case(
        "set member of two tokens",
        _prompts(),
        f"{TASK}:1: answer set member ' Maryanne'",
        task=_rows(answer=[" Maryanne", " Laura"]),
    ),  # fmt: skip
    Case(
        "token counts differ",
        _prompts(),
        f"{TASK}:1",
        task=_rows(corrupted="When John and Paul went to the store, Mark gave a drink to me"),
    ),
    # The grid against the model.
    Case("layer out of range", {"grid.layers": "[0,5]"}, "grid.layers"),
    Case("head out of range", {"grid.heads": "[4]"}, "grid.heads"),
    Case("position out of range", {"grid.positions": "[-100]"}, "grid.positions"),
    Case(
        "mlp of an attention-only model",
        {"model": "induction", "task": "induction", "grid.components": "[mlp_out]"},
        "grid.components",
    ),
    # Store paths.
    Case("store path is a file", {"store.path": "afile.txt"}, "afile.txt"),
    Case("store path is a folder of notes", {"store.path": "notes"}, "notes"),
    Case(
        "overwrite a folder of notes", {"store.path": "notes", "store.overwrite": "true"}, "notes"
    ),
    Case("store path is the working directory", {"store.path": "."}, "store.path"),
    Case(
        "overwrite the working directory",
        {"store.path": ".", "store.overwrite": "true"},
        "store.path",
    ),  # fmt: skip
    Case(
        "store of another config",
        {"store.path": "good.zarr", "task.n_prompts": "3"},
        "task.n_prompts: store has 2",
    ),  # fmt: skip
    Case("store of a newer format", {"store.path": "future.zarr"}, "format 99", setup=_future),
    Case(
        "truncated zarr.json",
        {"store.path": "hurt.zarr"},
        "hurt.zarr/zarr.json",
        setup=_damage_root,
    ),  # fmt: skip
    Case(
        "overwrite a store holding other files",
        {"store.path": "mixed.zarr", "store.overwrite": "true", "task.n_prompts": "3"},
        "my-notes.txt",
        setup=_foreign,
    ),
    Case("store under a file", {"store.path": "afile.txt/s.zarr"}, "afile.txt"),
    Case(
        "prompt block beyond the budget",
        {"store.prompt_block": "100000", "runner.memory_mb": "0.01"},
        "store.prompt_block",
    ),
    Case(
        "task file grown since the store was made",
        _prompts(**{"store.path": "grown.zarr"}),
        "task.path: the prompts read from the task file differ",
        setup=_grown_task,
    ),
    Case(
        "another prompt block on resume",
        {"store.path": "good.zarr", "store.prompt_block": "1"},
        "store.prompt_block",
    ),  # fmt: skip
    # The pictures and the status of a store.
    Case("plot a missing store", module="sweep.plot", argv=("missing.zarr",), names="missing.zarr"),
    Case("plot a folder of notes", module="sweep.plot", argv=("notes",), names="notes"),
    Case(
        "plot an unknown metric",
        module="sweep.plot",
        argv=("good.zarr", "--metric", "nope"),
        names="'nope'",
    ),  # fmt: skip
    Case(
        "plot a prompt out of range",
        module="sweep.plot",
        argv=("good.zarr", "--prompt", "99"),
        names="prompt 99 is out of range",
    ),  # fmt: skip
    Case(
        "plot a store with no finished cells",
        module="sweep.plot",
        argv=("empty.zarr",),
        names="empty.zarr has no finished cells yet",
        setup=_unfinished,
    ),  # fmt: skip
    Case(
        "plot a damaged store",
        module="sweep.plot",
        argv=("hurt.zarr",),
        names="zarr.json",
        setup=_damage_root,
    ),  # fmt: skip
    Case(
        "plot into a file",
        module="sweep.plot",
        argv=("good.zarr", "--out", "afile.txt/x"),
        names="--out",
    ),  # fmt: skip
    Case(
        "status of a missing store",
        module="sweep.status",
        argv=("missing.zarr",),
        names="missing.zarr",
    ),  # fmt: skip
    Case("status of a folder of notes", module="sweep.status", argv=("notes",), names="notes"),
    Case(
        "status of a damaged store",
        module="sweep.status",
        argv=("hurt.zarr",),
        names="zarr.json",
        setup=_damage_root,
    ),  # fmt: skip
]
EDGES = {"grid": "edges", "grid.components": None}
CASES += [
    Case("edge receiver before its sender",
         {**EDGES, "grid.senders": "[a1.*]", "grid.receivers": "[a0.*]"},
         "grid.senders, grid.receivers"),
    Case("edge head out of range", {**EDGES, "grid.receivers": "[a0.h9.q]"}, "grid.receivers"),
    Case("edge sender named as a receiver", {**EDGES, "grid.senders": "[a0.h0.q]"},
         "grid.senders"),
    Case("MLP edge on an attention-only model",
         {**EDGES, "model": "induction", "task": "induction", "grid.receivers": "[m0]"},
         "attention-only"),
    Case("edge sweep with AtP", {**EDGES, "intervention": "atp"}, "intervention=atp"),
    Case("edge sweep on the hooked engine", {**EDGES, "runner.engine": "hooks"},
         "runner.engine"),
    Case("edge sweep on a rotary model",
         {**EDGES, "+model.native.positional_embedding_type": "rotary",
          "+model.native.rotary_dim": "16"}, "grid=edges"),
]  # fmt: skip
READONLY = _readonly_dir()
if READONLY is not None:
    CASES.append(Case("read-only directory", {"store.path": f"{READONLY}/s.zarr"}, READONLY))


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    args = [f"{k}={v}" for k, v in {**BASE, "store.path": str(tmp / "good.zarr")}.items()]
    return Path(sweep.run(args))


def _workdir(tmp: Path, good: Path, case: Case) -> None:
    shutil.copytree(good, tmp / "good.zarr")
    (tmp / "notes").mkdir()
    (tmp / "notes" / "todo.txt").write_text("my notes")
    (tmp / "afile.txt").write_text("a file")
    task = case.task if case.task is not None else _rows()
    (tmp / TASK).write_bytes(task if isinstance(task, bytes) else task.encode())
    if case.setup is not None:
        case.setup(tmp)


def _argv(case: Case) -> list[str]:
    if case.argv is not None:
        return list(case.argv)
    merged = {**BASE, **case.args}
    return [*case.extra, *(f"{k}={v}" for k, v in merged.items() if v is not None)]


def test_a_quoted_path_with_spaces_and_non_ascii_letters_works(tmp_path: Path) -> None:
    """The quoting the refusal above suggests: a sweep, its status and its pictures."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [f"{k}={v}" for k, v in {**BASE, "store.plots": "true"}.items() if k != "store.path"]
    store = tmp_path / "my runs" / "é.zarr"
    commands = [
        ["sweep", *args, f"store.path='{store}'"],
        ["sweep.status", str(store)],
        ["sweep.plot", str(store)],
    ]
    outs = [python_m(cmd, tmp_path, env, timeout=300) for cmd in commands]
    assert [out.returncode for out in outs] == [0, 0, 0], [out.stderr for out in outs]
    assert "100.0%" in outs[1].stdout
    assert (store.parent / "é.plots" / "index.html").is_file()
    assert sweep.open_results(str(store)).sizes["prompt"] == 2


def test_the_suite_covers_forty_bad_inputs() -> None:
    assert len(CASES) + 2 >= 40  # + the two signals below
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(
    case: Case, good_store: Path, tmp_path: Path
) -> None:
    _workdir(tmp_path, good_store, case)
    before = file_hashes(tmp_path)
    out = python_m([case.module, *_argv(case)], tmp_path, {**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("patchsweep: error: "), lines[0]
    assert case.names in lines[0], lines[0]
    after = file_hashes(tmp_path)
    assert {k: after.get(k) for k in before} == before


def _wait_for_units(path: Path, proc: Forked, n: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        if (done_marks(path) > 0).sum() >= n:
            return
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_with_a_count_and_the_same_command_resumes(
    tmp_path: Path, sig: int, code: int
) -> None:
    """Ctrl-C (or a scheduler's SIGTERM) mid-sweep: one line, how many units are done,
    the exit code of the signal; the lease is released and the same command finishes."""
    args = ["model=native", "model.native.n_layers=4", "task=ioi", "task.n_prompts=6",
            "grid.components=[z_by_pos]", "store.chunk_kb=1", "runner.memory_mb=0.01",
            "runner.progress=false", "store.plots=false", "store.path=s.zarr"]  # fmt: skip
    proc = python_popen(["sweep", *args], tmp_path)
    _wait_for_units(tmp_path / "s.zarr", proc, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("patchsweep: error: interrupted: "), err
    done = int(lines[0].split("interrupted: ")[1].split(" of ")[0])
    stored = done_marks(tmp_path / "s.zarr")
    assert done == int((stored > 0).sum()) >= 1
    assert "run the same command to resume" in lines[0]
    assert not (tmp_path / "s.zarr" / "_patchsweep" / "lease.json").exists()
    again = python_m(["sweep", *args], tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"units: {len(stored) - done} computed this run" in again.stdout
