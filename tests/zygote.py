"""`python -m <module> ...` for tests, without paying for the imports each time.

A fresh interpreter spends about 4.5 of a tiny sweep's 6 seconds importing torch,
TransformerLens, Hydra, xarray and zarr. The server below imports them once (and runs no
tensor operation, so no thread pool exists to break a fork); each command is then a child
forked from it: a new process with its own pid, working directory, environment, standard
streams, ``sys.path[0]`` (the working directory, as ``-m`` sets it), signals, exit code and
exit handlers, as a user's command has. ``python_m`` stands for ``subprocess.run`` and
``python_popen`` for ``subprocess.Popen``; a test that counts what a command imports or
times it keeps a real subprocess.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
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
    """The client side: starts the server on first use, sends it one request line per
    command and reads its replies (``started ID PID``, ``exited ID CODE``)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="zygote-")
        self._count = 0
        self._buffer = b""
        self._started: dict[int, int] = {}
        self._exited: dict[int, int] = {}
        self._live: dict[int, int] = {}
        """The pid of each child started and not seen to end."""

    def _server(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=env, cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
            self._buffer = b""
        return self._proc

    def start(
        self, argv: list[str], cwd: Path | str, env: dict[str, str] | None,
        log: Path | None, new_session: bool,
    ) -> Forked:  # fmt: skip
        """Fork a child for ``python -m *argv``; its output goes to ``log`` (both streams)
        or to two files of its own that ``communicate`` reads."""
        server = self._server()
        self._count += 1
        ident = self._count
        if log is None:
            out, err = (Path(self._tmp.name) / f"{ident}.{s}" for s in ("out", "err"))
        else:  # created here, as Popen's caller opens it before the child starts
            out, err = Path(log), None
            out.write_bytes(b"")
        request = {"id": ident, "argv": list(argv), "cwd": str(cwd), "out": str(out),
                   "err": None if err is None else str(err), "session": new_session,
                   "env": dict(os.environ if env is None else env)}  # fmt: skip
        assert server.stdin is not None
        server.stdin.write((json.dumps(request) + "\n").encode())
        server.stdin.flush()
        deadline = time.monotonic() + 60
        while ident not in self._started:
            self._read(deadline)
        self._live[ident] = self._started.pop(ident)
        return Forked(self, ident, self._live[ident], [sys.executable, "-m", *argv], out, err)

    def exit_code(self, ident: int, deadline: float | None) -> int | None:
        """The child's exit code once it has ended, else None at ``deadline`` (None: now)."""
        while ident not in self._exited:
            if not self._read(deadline):
                return None
        return self._exited[ident]

    def _read(self, deadline: float | None) -> bool:
        """Read the replies that arrive before ``deadline``; False if none did."""
        server = self._server()
        assert server.stdout is not None
        fd = server.stdout.fileno()
        wait = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError(f"the zygote server died (exit {server.wait()})")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            what, ident, value = line.decode().split()
            (self._started if what == "started" else self._exited)[int(ident)] = int(value)
            if what == "exited":
                self._live.pop(int(ident), None)
        return True

    def close(self) -> None:
        """Kill the children still running (a test that failed before it stopped its own),
        then end the server."""
        for pid in self._live.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._proc is not None:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.close()  # the server ends once its children have
            self._proc.wait(30)
            self._proc.stdout.close()
        self._tmp.cleanup()


class Forked:
    """One forked command, as ``subprocess.Popen`` shows one (text output)."""

    def __init__(self, zygote: Zygote, ident: int, pid: int, args: list[str], out: Path,
                 err: Path | None) -> None:  # fmt: skip
        self._zygote, self._ident, self.pid, self.args = zygote, ident, pid, args
        self._out, self._err = out, err
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self._ident, None)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self._ident, deadline)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait, then the output (stdout and stderr; '' for a child that wrote to a log)."""
        self.wait(timeout)
        if self._err is None:
            return "", ""
        texts = [p.read_text(errors="replace") for p in (self._out, self._err)]
        self._out.unlink()
        self._err.unlink()
        return texts[0], texts[1]


_SHARED: list[Zygote] = []


def _zygote() -> Zygote:
    if not _SHARED:
        _SHARED.append(Zygote())
    return _SHARED[0]


def python_m(
    argv: list[str], cwd: Path | str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)``, forked from the session's one server."""
    child = python_popen(argv, cwd, env)
    try:
        out, err = child.communicate(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(60)
        raise
    return subprocess.CompletedProcess(child.args, child.wait(), out, err)


def python_popen(
    argv: list[str], cwd: Path | str, env: dict[str, str] | None = None,
    log: Path | None = None, new_session: bool = False,
) -> Forked:  # fmt: skip
    """``subprocess.Popen([sys.executable, "-m", *argv], ...)``: output to ``log`` (stdout and
    stderr) or read by ``communicate``; ``new_session`` as ``start_new_session``."""
    return _zygote().start(argv, cwd, env, log, new_session)


def close() -> None:
    """Stop the session's server (conftest calls it when the session ends)."""
    while _SHARED:
        _SHARED.pop().close()


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the user's command, then exit as an interpreter does."""
    import atexit
    import runpy
    import threading
    import traceback

    if request["session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    write = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if request["err"] else os.O_APPEND)
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], write),
                            (2, request["err"] or request["out"], write)):  # fmt: skip
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
    """Import PRELOAD, then fork one child per request line (several may run at once);
    reply ``started ID PID`` at once and ``exited ID CODE`` when it ends (a negative code
    for a signal, as ``subprocess`` reports it). Ends when its input closes."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    reply = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    children: dict[int, int] = {}
    pending, open_input = b"", True
    while open_input or children:
        ready = select.select([0] if open_input else [], [], [], 0.02 if children else None)[0]
        if ready:
            chunk = os.read(0, 65536)
            open_input = bool(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os.close(reply)
                    _child(request)
                children[pid] = request["id"]
                os.write(reply, f"started {request['id']} {pid}\n".encode())
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in children:
                code = os.waitstatus_to_exitcode(status)
                os.write(reply, f"exited {children.pop(pid)} {code}\n".encode())


if __name__ == "__main__":
    serve()
