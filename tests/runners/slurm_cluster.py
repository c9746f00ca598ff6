"""A real SLURM on this machine: munge, a controller and two ``slurmd`` nodes (Debian's
``slurm-wlm`` is built with multiple-slurmd support: two node names on 127.0.0.1 with ports
of their own). Used by ``tests/runners/test_slurm.py`` and ``bench/cluster_runs.py``.

Everything lives in one directory: its own munge key and socket, its own ``slurm.conf``
(``SLURM_CONF`` points the commands at it), state and logs. ``stop()`` terminates only the
daemons it started, by pid.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def missing() -> str | None:
    """Why a SLURM cannot be started here, or None."""
    lacking = [d for d in DAEMONS if shutil.which(d) is None]
    if lacking:
        return f"no {', '.join(lacking)}: make slurm installs Debian's slurm-wlm and munge"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their users: the test cluster needs root"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


CONF = """\
ClusterName=patchsweep-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld}
AuthType=auth/munge
AuthInfo=socket={dir}/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
KillWait=2
MinJobAge=6
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port={n1} CPUs=1 RealMemory=1000
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port={n2} CPUs=1 RealMemory=1000
PartitionName=test Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""
"""``sbatch --wait`` polls the job's state after 2 s, then 8 s, then every 32 s while the
interval is under a third of ``MinJobAge`` (300 by default): a 20 s job was seen to end at
42 s. At 6 it polls every 2 s (a finished job's record still outlives two polls).
``KillWait`` (10 by default): the seconds between SIGTERM and SIGKILL of a cancelled step."""


class SlurmCluster:
    """Started by ``start()``; ``env`` reaches it (``SLURM_CONF``)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf")}

    def start(self) -> SlurmCluster:
        d = self.dir
        for sub in ("munge", "state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "munge").chmod(0o711)
        key = d / "munge" / "key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        ctld, n1, n2 = _free_ports(3)
        (d / "slurm.conf").write_text(CONF.format(dir=d, ctld=ctld, n1=n1, n2=n2))
        m = d / "munge"
        files = [f"--{k}={m}/{k.split('-')[0]}" for k in ("log-file", "pid-file", "seed-file")]
        self._spawn("munged", "-F", "-f", f"--socket={m}/socket", f"--key-file={key}", *files)
        self._wait(lambda: (m / "socket").exists(), "munged")
        conf = str(d / "slurm.conf")
        self._spawn("slurmctld", "-D", "-f", conf)
        self._spawn("slurmd", "-D", "-N", "n1", "-f", conf)
        self._spawn("slurmd", "-D", "-N", "n2", "-f", conf)
        self._wait(lambda: self.idle() == 2, "two idle nodes")
        return self

    def _spawn(self, *cmd: str) -> None:
        name = cmd[0] + (f"-{cmd[3]}" if cmd[0] == "slurmd" else "")
        with (self.dir / f"{name}.out").open("wb") as out:  # the daemon keeps its own copy
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                               env=self.env))  # fmt: skip

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited: {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"SLURM: no {what} within {timeout:.0f} s: {self.logs()}")
            time.sleep(0.5)

    def idle(self) -> int:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout
        return sum(line.strip() == "idle" for line in out.splitlines())

    def run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **kw.pop("env", {})}
        return subprocess.run(cmd, env=env, text=True, capture_output=True, check=check, **kw)

    def wait_gone(self, job: str, timeout: float = 120) -> None:
        """Until the job has left the queue (ended, its steps stopped)."""
        self._wait(lambda: not self.run("squeue", "-h", "-j", job, check=False).stdout.strip(),
                   f"end of job {job}", timeout)  # fmt: skip

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log"))
        )

    def stop(self) -> None:
        """Cancel this cluster's jobs, wait for their steps to end (a step still ending
        when slurmctld stops holds its slurmstepd for a minute), then stop the daemons it
        started (only those)."""
        self.run("scancel", "--partition=test", check=False)
        try:
            self._wait(lambda: not self.run("squeue", "-h", check=False).stdout.strip(),
                       "empty queue", 120)  # fmt: skip
        except RuntimeError:
            pass  # a daemon has died: stop the others all the same
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
