"""How fast a manifest reaches every node: three cocained nodes, each in its own network namespace,
on one etcd (tests/cluster_support.py, needs root). Each round creates an app on one node (in turn)
and measures the time from that node's reply to the app running on all three, then deletes it
(likewise, to gone from all three). Nodes are polled over their management endpoints in parallel,
so the figures include up to ~2 ms of polling.

Usage: sudo .venv/bin/python bench/bench_cluster_manifests.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cluster_support import Etcd, Network, etcd_unavailable, namespaces_unavailable, start_nodes, stop_nodes  # noqa: E402
from support import Client  # noqa: E402

# No worker starts (pool-min 0, the timer an hour away): the measure is the cluster's, not a spawn.
MANIFEST = {"type": "python", "args": __file__,
            "tasks": {"t": {"type": "recurring-timer", "interval": 3_600_000, "scope": "node"}}}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_all(context, nodes, app: str, running: bool, since: float) -> float:
    """Seconds from ``since`` until every node reports ``app`` running (or gone)."""
    done: list[float] = []

    def poll(node) -> None:
        client = Client(context, node.management, timeout=5)
        try:
            while True:
                apps = client.call_json({"version": 2, "action": "info", "apps": [app]})["apps"]
                if (apps[app].get("state") == "running") == running:
                    done.append(time.perf_counter())
                    return
        finally:
            client.close()

    threads = [threading.Thread(target=poll, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return max(done) - since


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    reason = namespaces_unavailable() or etcd_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    context = zmq.Context()
    network = Network(hosts=3)
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-cluster-") as tmp:
        etcd = Etcd(Path(tmp) / "etcd", network.gateway).start()
        nodes = start_nodes(Path(tmp), context, network, etcd, 3)
        try:
            created, deleted, replies = [], [], []
            for i in range(args.rounds):
                node, app = nodes[i % 3], f"app{i}"
                client = Client(context, node.management, timeout=10)
                sent = time.perf_counter()
                manifest = {**MANIFEST, "pubsub": {"endpoint": f"tcp://127.0.0.1:{20000 + i}"}}
                reply = client.call_json({"version": 2, "action": "create", "apps": {app: manifest}})
                answered = time.perf_counter()
                assert "error" not in reply[app], reply
                replies.append(answered - sent)
                created.append(wait_all(context, nodes, app, True, answered))
                reply = client.call_json({"version": 2, "action": "delete", "apps": [app]})
                answered = time.perf_counter()
                assert reply[app] == {"deleted": True}, reply
                deleted.append(wait_all(context, nodes, app, False, answered))
                client.close()
        finally:
            stop_nodes(nodes)
            etcd.stop()
            network.close()
    result = {"rounds": args.rounds}
    for name, values in (("create reply", replies), ("create → running on all", created),
                         ("delete → gone from all", deleted)):
        result[name] = {q: round(quantile(values, v) * 1000, 1) for q, v in (("p50", 0.5), ("p99", 0.99))}
        result[name]["max"] = round(max(values) * 1000, 1)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
