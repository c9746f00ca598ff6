"""A Ray cluster of three nodes on this machine (a head and two worker nodes, one CPU each,
each its own raylet), in a process of its own so that no Ray state of the test process
(a session's ``ray.init``) meets it.

    python ray_nodes.py GPUS_PER_NODE [PYTHON]

With PYTHON, the head and one worker node started by ``ray start`` from that interpreter
(a cluster whose worker node has another Python environment). Prints the cluster's
address, then obeys lines on stdin: ``remove I`` removes worker node I with its raylet
(and answers ``removed``), ``stop`` (or the end of stdin) shuts it down.
"""

from __future__ import annotations

import subprocess
import sys
import time

from ray.cluster_utils import Cluster

if __name__ == "__main__":
    args = {"num_cpus": 1, "num_gpus": int(sys.argv[1])}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    workers = [cluster.add_node(**args) for _ in range(2 if len(sys.argv) < 3 else 0)]
    cluster.wait_for_nodes()
    other = None
    if len(sys.argv) > 2:
        start = ["-m", "ray.scripts.scripts", "start", f"--address={cluster.address}"]
        other = subprocess.Popen([sys.argv[2], *start, "--num-cpus=1", "--block"],
                                 stdout=subprocess.DEVNULL)  # fmt: skip
        while len(cluster.global_state._live_node_ids()) < 2:
            time.sleep(0.2)
    print(cluster.address, flush=True)  # noqa: T201
    try:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["remove"]:
                cluster.remove_node(workers[int(words[1])])
                print("removed", flush=True)  # noqa: T201
            elif words[:1] == ["stop"]:
                break
    finally:
        if other is not None:
            other.terminate()
            other.wait(timeout=60)
        cluster.shutdown()
