"""`python -m <module> ...` for tests, without paying for the imports each time.

A fresh interpreter spends about 4.5 of a tiny sweep's 6 seconds importing torch,
TransformerLens, Hydra, xarray and zarr. The server below imports them once (and runs no
tensor operation, so no thread pool exists to break a fork); each command is then a child
forked from it: a new process with its own working directory, environment, standard streams,
``sys.path[0]`` (the working directory, as ``-m`` sets it), exit code and exit handlers, as a
user's command has. Tests that signal a command, count what it imports or time it keep a
real ``subprocess``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PRELOAD = (
    "torch",
    "transformer_lens",
    "transformers",
    "hydra",
    "omegaconf",
    "xarray",
    "zarr",
    "numpy",
    "sweep.cli",
    "sweep.driver",
    "sweep.engine.worker",
    "sweep.models",
)
"""Imported by the server; a module run with ``-m`` is imported afresh in its child."""


class Zygote:
    """Starts the server on first use; `run` mirrors ``subprocess.run(capture_output=True,
    text=True)`` for ``[sys.executable, "-m", *argv]``."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="zygote-")
        self._count = 0

    def _server(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=env, cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
        return self._proc

    def run(
        self, argv: list[str], cwd: Path | str, env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        server = self._server()
        self._count += 1
        out, err = (Path(self._tmp.name) / f"{self._count}.{s}" for s in ("out", "err"))
        request = {"argv": list(argv), "cwd": str(cwd), "out": str(out), "err": str(err),
                   "env": dict(os.environ if env is None else env)}  # fmt: skip
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write((json.dumps(request) + "\n").encode())
        server.stdin.flush()
        pid = int(_line(server, 60))
        try:
            code = int(_line(server, timeout))
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            _line(server, 60)
            raise subprocess.TimeoutExpired([sys.executable, "-m", *argv], timeout) from None
        stdout, stderr = (p.read_text(errors="replace") for p in (out, err))
        out.unlink()
        err.unlink()
        return subprocess.CompletedProcess([sys.executable, "-m", *argv], code, stdout, stderr)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(30)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._tmp.cleanup()


_SHARED: list[Zygote] = []


def python_m(
    argv: list[str], cwd: Path | str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)``, forked from the session's one server."""
    if not _SHARED:
        _SHARED.append(Zygote())
    return _SHARED[0].run(argv, cwd, env, timeout)


def close() -> None:
    """Stop the session's server (conftest calls it when the session ends)."""
    while _SHARED:
        _SHARED.pop().close()


def _line(server: subprocess.Popen[bytes], timeout: float) -> str:
    """One reply line, or TimeoutExpired; a dead server is an error that says so."""
    assert server.stdout is not None
    fd = server.stdout.fileno()
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("zygote", timeout)
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError(f"the zygote server died (exit {server.wait()})")
        data += chunk
    return data.decode().strip()


def _child(request: dict[str, Any], reply: int) -> None:
    """In the forked child: become the user's command, then exit as an interpreter does."""
    import atexit
    import runpy
    import threading
    import traceback

    os.close(reply)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], write),
                            (2, request["err"], write)):  # fmt: skip
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    module, *args = request["argv"]
    sys.path[0] = os.getcwd()
    if not hasattr(sys.modules.get(module), "__path__"):
        sys.modules.pop(module, None)
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            sys.stderr.write(f"{stop.code}\n")
            code = 1
    except BaseException:  # what an interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter's exit does
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """Import PRELOAD, then fork one child per request line; reply with its pid, then its
    exit code (negative for a signal, as ``subprocess`` reports it)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    reply = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, reply)
        os.write(reply, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(reply, f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    serve()
