"""The Ray runner: one worker actor per GPU (one per node on a CPU-only cluster), each
loading the model once.

The only module that imports ray. Workers are pinned to nodes (``placement``), with torch
threads sized to their own node's CPUs. The driver keeps a bounded number of units in
flight, yields results in completion order (the caller streams them into the store), and
replaces a worker whose process or node dies, on a live node, re-queueing the jobs it held.
Jobs are idempotent (same unit -> same chunk, same values), so one that ran twice is
harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweep import interrupts
from sweep.errors import ConfigError, SweepError
from sweep.plan import Job
from sweep.runners.affinity import BlockQueue
from sweep.runners.base import J, Runner, RunnerStats, WorkerFactory, default_worker
from sweep.spec import RayRunnerSpec, SweepSpec

log = logging.getLogger(__name__)

# A dead or restarting actor: the unit goes back to the queue and the worker is replaced.
LOST_WORKER = (RayActorError, ActorUnavailableError)
POLL_S = 0.2
"""How often a wait on Ray looks for a Ctrl-C: Ray's calls run with signals deferred."""


class _RayWorker:
    """Actor body: builds the worker in ``setup`` so its errors come back as values."""

    def __init__(self, spec: SweepSpec, threads: int, make_worker: WorkerFactory) -> None:
        self.spec = spec
        self.threads = threads
        self.make_worker = make_worker
        self.worker: Any = None

    def setup(self) -> dict[str, Any]:
        import torch

        torch.set_num_threads(self.threads)
        self.worker = self.make_worker(self.spec)
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    def execute(self, job: Job) -> Any:
        return self.worker.execute(job)

    def stats(self) -> dict[str, int]:
        return getattr(self.worker, "stats", dict)()


@dataclass
class _Slot:
    """One worker position; its actor is replaced when it dies."""

    actor: Any
    node: Node
    generation: int = 0
    restarts: int = 0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Node:
    """A live Ray node, as placement sees it."""

    id: str
    address: str
    cpus: int
    gpus: int

    @property
    def label(self) -> str:
        """How the summary names it: its address and the start of its id (nodes started
        on one machine share an address)."""
        return f"{self.address}/{self.id[:6]}"


def live_nodes() -> list[Node]:
    """The cluster's live nodes that can run a worker, in a stable order (by id)."""
    out = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        if n.get("Alive") and res.get("CPU", 0) >= 1:
            out.append(Node(n["NodeID"], str(n.get("NodeManagerAddress", "?")),
                            int(res["CPU"]), int(res.get("GPU", 0))))  # fmt: skip
    return sorted(out, key=lambda x: x.id)


def placement(configured: int | None, nodes: list[Node]) -> list[Node]:
    """The node of each worker: one per GPU on GPU nodes (``runner.num_workers`` of them
    at most), else one per node (or ``runner.num_workers``, spread round-robin)."""
    gpus = sum(n.gpus for n in nodes)
    if gpus:
        if configured is not None and configured > gpus:
            raise ConfigError(
                f"runner.num_workers: {configured} workers need {configured} GPUs, "
                f"the cluster has {gpus}"
            )
        slots = [n for n in nodes for _ in range(n.gpus)]
        return slots[: configured or len(slots)]
    count = configured or len(nodes)
    return [nodes[i % len(nodes)] for i in range(count)]


def threads_for(node: Node, slots: list[Node]) -> int:
    """Torch threads of a worker: its node's CPUs shared by the workers on that node."""
    return max(1, node.cpus // max(1, sum(s.id == node.id for s in slots)))


def check_reachable(address: str, timeout_s: float) -> None:
    """Fail in seconds, naming the address, when nothing listens there."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"runner.address: {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"runner.address: nothing answers at {address} ({e}); start a Ray head there "
            "(ray start --head) or leave runner.address unset to start a local Ray"
        ) from None


def connect(spec: RayRunnerSpec) -> bool:
    """Join or start Ray; True when this call connected (and close should disconnect)."""
    if spec.address is not None:
        check_reachable(spec.address, spec.connect_timeout_s)
    if ray.is_initialized():
        return False  # a notebook or test session that already holds a Ray connection
    if spec.address is None:
        # A private Ray for this sweep: loopback only, no dashboard (nothing to expose).
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address="127.0.0.1",
        )
        return True
    address = spec.address
    if address == "auto":
        # Inside a Ray job (ray job submit, KubeRay) RAY_ADDRESS names this job's cluster;
        # "auto" alone would guess among every Ray on the machine.
        address = os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        raise ConfigError(f"runner.address: could not join Ray at {spec.address}: {e}") from None
    return True


def _not_installed(e: Exception, node: Node, address: str | None) -> SweepError | None:
    """The error to show when a worker died because its node cannot import patchsweep
    (a cluster started from an environment without it); None for any other death."""
    if "No module named 'sweep'" not in str(e):
        return None
    import sweep

    return SweepError(
        f"runner.address: node {node.label} of the Ray cluster at {address or 'auto'} cannot "
        f"import patchsweep (No module named 'sweep'); install patchsweep {sweep.__version__} "
        "in the Python environment Ray runs on every node (pip install patchsweep[cluster]), "
        "or start the nodes from the image cluster/Dockerfile builds"
    )


def _unwrap(e: RayTaskError) -> Exception:
    """Our own errors come back wrapped; show the user the original message."""
    cause = e.cause
    return cause if isinstance(cause, SweepError) else e


class RayRunner(Runner):
    def __init__(self, spec: SweepSpec, make_worker: WorkerFactory = default_worker) -> None:
        super().__init__(spec, make_worker)
        assert isinstance(spec.runner, RayRunnerSpec)
        self.settings = spec.runner
        self.slots: list[_Slot] = []
        self.owns_connection = False
        try:
            with interrupts.deferred():  # a cut ray.init leaves Ray's agents running
                self.owns_connection = connect(spec.runner)
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        nodes = self._wait_for_nodes()
        where = placement(self.settings.num_workers, nodes)
        self.gpus = any(n.gpus for n in nodes)
        self.lost = 0
        """Workers lost with their node (a subset of the restarts)."""
        self.requeued = 0
        """Jobs sent again after their worker died holding them."""
        self.actor_class = ray.remote(_RayWorker)
        self.actor_options = dict(
            num_gpus=1 if self.gpus else 0,
            # CPUs are not reserved: Ray would otherwise hold them for the actors' lifetime
            # and starve other work on small nodes; torch threads are sized instead.
            num_cpus=0,
            max_restarts=0,
        )
        with interrupts.deferred():
            for node in where:
                self.slots.append(_Slot(self._new_actor(node, where), node))
            setups = [s.actor.setup.remote() for s in self.slots]
        self.worker_info = []
        for slot, ref in zip(self.slots, setups, strict=True):
            try:
                self.worker_info.append(self._get(ref))
            except LOST_WORKER as e:
                raise _not_installed(e, slot.node, self.settings.address) or e from None
        each = ", ".join(f"{n.label}: {threads_for(n, where)} torch threads" for n in where)
        log.info("ray: %d workers on %d nodes (%s)", len(where), len({n.id for n in where}), each)

    def _wait_for_nodes(self) -> list[Node]:
        """The live nodes, once ``runner.min_nodes`` of them have joined."""
        want, timeout = self.settings.min_nodes or 1, self.settings.node_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            with interrupts.deferred():
                nodes = live_nodes()
            if len(nodes) >= want:
                return nodes
            if time.monotonic() > deadline:
                raise SweepError(
                    f"runner.min_nodes: {len(nodes)} of {want} nodes joined the Ray cluster "
                    f"at {self.settings.address or 'this machine'} within {timeout:.0f} s; "
                    "check that every node can reach the head (its address and port, a "
                    "firewall) and that Ray started there, or lower runner.min_nodes"
                )
            interrupts.check()
            time.sleep(POLL_S)

    @property
    def stats(self) -> RunnerStats:
        """Counted from every live worker; one whose node was lost after its last job
        (never seen to die) counts as lost, not as an error."""
        builds, silent = [], 0
        for slot in self.slots:
            try:
                builds.append(int(self._get(slot.actor.stats.remote()).get("cache_builds", 0)))
            except LOST_WORKER:
                builds.append(0)
                silent += 1
        return RunnerStats(
            workers=len(self.slots),
            restarts=sum(s.restarts for s in self.slots),
            cache_builds=tuple(builds),
            nodes=tuple(s.node.label for s in self.slots),
            lost=self.lost + silent,
            requeued=self.requeued,
        )

    def _new_actor(self, node: Node, slots: list[Node]) -> Any:
        pin = NodeAffinitySchedulingStrategy(node.id, soft=False)
        threads = threads_for(node, slots)
        return self.actor_class.options(**self.actor_options, scheduling_strategy=pin).remote(
            self.spec, threads, self.make_worker
        )

    def _get(self, refs: Any) -> Any:
        """``ray.get``, waiting in short steps so that a Ctrl-C stops it between them."""
        with interrupts.deferred():
            waiting = list(refs) if isinstance(refs, list) else [refs]
            while waiting:
                _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_S)
                interrupts.check()
            try:
                return ray.get(refs)
            except RayTaskError as e:
                raise _unwrap(e) from None

    def _execute(self, jobs: Sequence[J]) -> Iterator[tuple[J, Any]]:
        """Keep ``in_flight_per_worker`` jobs queued on each worker, a prompt block's jobs
        on the worker that holds its runs; a job whose worker died goes back to the queue
        and the worker is replaced."""
        queue = BlockQueue(jobs)
        pending: dict[Any, tuple[int, int, J]] = {}
        limit = self.settings.in_flight_per_worker
        while queue or pending:
            with interrupts.deferred():
                for i, slot in enumerate(self.slots):
                    while slot.in_flight < limit and (job := queue.take(i)) is not None:
                        pending[slot.actor.execute.remote(job)] = (i, slot.generation, job)
                        slot.in_flight += 1
                ready: list[Any] = []
                while not ready:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                    interrupts.check()
            ref = ready[0]
            i, generation, job = pending.pop(ref)
            slot = self.slots[i]
            if generation == slot.generation:
                slot.in_flight -= 1
            try:
                result = self._get(ref)
            except LOST_WORKER as e:
                if missing := _not_installed(e, slot.node, self.settings.address):
                    raise missing from None
                queue.put_back(job)
                self.requeued += 1
                if generation == slot.generation:
                    queue.forget(i)
                    self._replace(i, e)
                continue
            yield job, result

    def _replace(self, i: int, cause: Exception) -> None:
        slot = self.slots[i]
        if slot.restarts >= self.settings.max_worker_restarts:
            last = (str(cause).strip() or type(cause).__name__).splitlines()[0]
            raise SweepError(
                f"worker {i} died {slot.restarts + 1} times (last: {last}); giving up. "
                "Run the same command again to resume, or raise runner.max_worker_restarts"
            ) from cause
        with interrupts.deferred():
            ray.kill(slot.actor, no_restart=True)
            node = self._live_node_for(i, cause)
            log.warning("worker %d died (%s); replacing it on node %s and re-queueing its jobs",
                        i, cause, node.label)  # fmt: skip
            slot.node = node
            slot.actor = self._new_actor(node, [s.node for s in self.slots])
            slot.actor.setup.remote()  # runs before any job sent to it: actor calls are ordered
        slot.generation += 1
        slot.restarts += 1
        slot.in_flight = 0

    def _live_node_for(self, i: int, cause: Exception) -> Node:
        """The node for worker ``i``'s replacement: its own if still alive, else the live
        node with the fewest workers (with a free GPU, on a GPU cluster)."""
        nodes = live_nodes()
        own = self.slots[i].node
        if any(n.id == own.id for n in nodes):
            return own
        self.lost += 1
        others = [s.node.id for j, s in enumerate(self.slots) if j != i]
        room = [n for n in nodes if not self.gpus or others.count(n.id) < n.gpus]
        if not room:
            raise SweepError(
                f"worker {i}'s node {own.label} was lost and no live node has room for its "
                f"replacement ({len(nodes)} live); the units done are kept: run the same "
                "command again to resume once the cluster has room"
            ) from cause
        return min(room, key=lambda n: (others.count(n.id), n.id))

    def close(self) -> None:
        """Stop the workers, and Ray if this runner started it; a Ctrl-C waits for it,
        so no Ray process of this sweep is left behind."""
        with interrupts.deferred():
            for slot in self.slots:
                ray.kill(slot.actor, no_restart=True)
            self.slots = []
            if self.owns_connection:
                ray.shutdown()
