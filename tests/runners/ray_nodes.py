"""A Ray cluster of three nodes on this machine (a head and two worker nodes, one CPU each,
each its own raylet), in a process of its own so that no Ray state of the test process
(a session's ``ray.init``) meets it.

    python ray_nodes.py GPUS_PER_NODE

Prints the cluster's address, then obeys lines on stdin: ``remove I`` removes worker node
I with its raylet (and answers ``removed``), ``stop`` (or the end of stdin) shuts it down.
"""

from __future__ import annotations

import sys

from ray.cluster_utils import Cluster

if __name__ == "__main__":
    args = {"num_cpus": 1, "num_gpus": int(sys.argv[1])}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    workers = [cluster.add_node(**args) for _ in range(2)]
    cluster.wait_for_nodes()
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
        cluster.shutdown()
