"""Load-aware balancing across nodes with the cluster client (cocaine.cluster.client):

- three cocained nodes on loopback serving the same app behind `native-server`; each request sleeps
  `--work` seconds in a worker (so capacity is workers / work, whatever the CPUs). Two nodes have
  `--workers` workers, the third, the slowed one, only one;
- each node's capacity alone (requests/s with twice its workers in flight), then their sum;
- power of two choices against round robin, in alternating rounds of the same run, with
  `--inflight` requests in flight from one shared client (one thread per request in flight), P2C
  weighing its requests in flight per node as they are, or per worker slot when told the nodes' sizes:
  throughput against the sum of capacities, and p50/p99 latency;
- the cost of the client's choice: one request at a time to a no-op handler on one node, through
  the cluster client (given the node under three names, so it still chooses) against a plain
  native_client call: wall time, and the client's CPU time per call;
- the cost of one server-side forward (``engine.overflow: "forward"``): two nodes in network
  namespaces on one etcd (tests/cluster_support.py; needs root and etcd, else this part says why it
  is not measured). Node A's only worker is held by a long job and its queue is full, so A forwards
  every request to node B. One request at a time to B's no-op handler, sent to B (answered there)
  against sent to A (forwarded to B, answered back through A), alternating: wall time per call and
  the CPU per call of both daemons and their workers.

Nodes come from a static list for the balancing part (no etcd needed), so no node reports its load:
the per-slot variant is told each node's worker count, as the pool-limit in an etcd node record would
tell it.

Usage: sudo .venv/bin/python bench/bench_cluster.py [--duration 5] [--rounds 2] [--forward-calls 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from bench_echo import _free_port, _manage
from cocaine.cluster.client import ClusterClient, RoundRobin, StaticNodes, power_of_two_choices
from cocaine.drivers.native_client import Client
from loadgen import cpu_seconds, stop_process

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cluster_support import ClusterNode, Etcd, Network, etcd_unavailable, namespaces_unavailable, stop_nodes  # noqa: E402
from support import wait_for  # noqa: E402

P2C_SLOTS = "P2C, in flight per worker slot"
P2C = "P2C, in flight only"
RR = "round robin"

APP = """
import time

WORK = float({work!r})

def work(request):
    time.sleep(WORK)
    return b"ok"

def noop(request):
    return b"ok"

def hold(request):  # keeps node A's only worker busy for the forward measure
    time.sleep(float(request.body))
    return b"ok"
"""


class Node:
    def __init__(self, name: str, tmp: str, app: str, workers: int) -> None:
        self.name = name
        self.management = f"tcp://127.0.0.1:{_free_port()}"
        self.endpoints = {task: f"tcp://127.0.0.1:{_free_port()}" for task in ("work", "noop")}
        self.workers = workers
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/{name}/storage",
             "--runtime-dir", f"{tmp}/{name}/run", "--management", self.management, "--log-level", "warning"])
        manifest = {"type": "python", "args": app,
                    "engine": {"pool-limit": workers, "pool-min": workers, "concurrency": 1, "queue-limit": 10000},
                    "tasks": {task: {"type": "native-server", "endpoint": e} for task, e in self.endpoints.items()}}
        reply = _manage(self.management, {"version": 2, "action": "create", "apps": {"bench": manifest}})
        assert "error" not in reply.get("bench", reply), reply

    def warm(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pool = _manage(self.management, {"version": 2, "action": "info"})["apps"]["bench"]["pool"]
            if pool["total"] == self.workers and not pool["starting"]:
                return
            time.sleep(0.1)  # polling a bench's setup, not synchronising a test
        raise RuntimeError(f"node {self.name}: pool never reached {self.workers} workers")

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def load(client: ClusterClient, inflight: int, duration: float) -> dict:
    """``inflight`` threads each sending one request after the other through ``client``."""
    latencies: list[float] = []
    errors: list[str] = []
    where: dict[str, int] = {}
    stop_at = time.perf_counter() + duration
    lock = threading.Lock()

    def run() -> None:
        mine, mine_where = [], {}
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                break
            try:
                call = client.request(b"")
                call.read()
                mine_where[call.node] = mine_where.get(call.node, 0) + 1
            except Exception as e:  # noqa: BLE001 - counted and shown: a bench must not hide failures
                with lock:
                    errors.append(str(e))
                continue
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            for node, count in mine_where.items():
                where[node] = where.get(node, 0) + count

    began = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(inflight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "errors": len(errors),
            "first_error": errors[0] if errors else None, "where": where}


def choice_cost(nodes: list[Node], calls: int) -> dict:
    """Microseconds per sequential no-op call: cluster client against plain native_client, alternating."""
    context = zmq.Context.instance()
    plain = Client(nodes[0].endpoints["noop"], context=context)
    # Three names for the one node: the client does all the work of choosing, and the server side
    # is the same as the plain call's.
    cluster = ClusterClient("bench", "noop", StaticNodes({f"{nodes[0].name}-{i}": nodes[0].endpoints["noop"]
                                                          for i in range(3)}), context=context)
    timings = {"native_client": [], "cluster_client": []}
    cpu = {"native_client": [], "cluster_client": []}
    try:
        for _ in range(200):  # connections up, workers warm
            plain.call(b"")
            cluster.call(b"")
        for _ in range(5):
            for name, call in (("native_client", plain.call), ("cluster_client", cluster.call)):
                started, started_cpu = time.perf_counter(), time.thread_time()
                for _ in range(calls):
                    call(b"")
                timings[name].append((time.perf_counter() - started) / calls * 1e6)
                cpu[name].append((time.thread_time() - started_cpu) / calls * 1e6)
    finally:
        plain.close()
        cluster.close()
    return {name: (statistics.median(timings[name]), statistics.median(cpu[name])) for name in timings}


def tree_cpu(node) -> float:
    """CPU seconds used so far by a node's daemon and its live workers."""
    total = 0.0
    for pid in [node.proc.pid, *node.workers()]:
        try:
            total += cpu_seconds(pid)
        except OSError:  # a worker that just exited
            pass
    return total


def forward_cost(app: str, calls: int, rounds: int) -> dict | str:
    """Microseconds per sequential no-op call answered by node B: sent to B against forwarded by A.
    Returns why not, when namespaces or etcd are not available here."""
    reason = namespaces_unavailable() or etcd_unavailable()
    if reason:
        return reason
    context = zmq.Context.instance()
    network = Network(hosts=2)
    port = 9300
    try:
        with tempfile.TemporaryDirectory(prefix="cocaine-bench-forward-") as tmp:
            etcd = Etcd(Path(tmp) / "etcd", network.gateway).start()
            # Logging at warning, as in production: the tests' debug level logs every forward.
            nodes = [ClusterNode(Path(tmp) / f"node-{i}", context, network, i, etcd, "--log-level", "warning")
                     for i in range(2)]
            for node in nodes:
                node.start()
            a, b = nodes
            try:
                a.create("fwd", {"type": "python", "args": app,
                                 # A worker in a handler does not heartbeat: the held one must outlive the run.
                                 "engine": {"pool-limit": 1, "pool-min": 1, "concurrency": 1, "queue-limit": 1,
                                            "overflow": "forward", "heartbeat-timeout": 7200},
                                 "tasks": {"noop": {"type": "native-server", "endpoint": f"tcp://*:{port}"},
                                           "hold": {"type": "native-server", "endpoint": f"tcp://*:{port + 1}"}}})
                wait_for(lambda: all(n.info("fwd").get("state") == "running" and n.info("fwd")["pool"]["idle"] == 1
                                     for n in nodes), timeout=30, message="a ready worker on both nodes")
                wait_for(lambda: set(a.cluster()["apps"].get("fwd", {})) == {a.name, b.name}, timeout=10,
                         message="node A seeing the app on node B")
                holder = Client(a.endpoint(port + 1), context=context, timeout=3600)
                held = [holder.request(b"3600"), holder.request(b"3600")]  # A's worker, then its queue
                wait_for(lambda: a.info("fwd")["queue"]["depth"] == 1, timeout=10, message="node A's queue full")
                local = Client(b.endpoint(port), context=context)
                forwarded = Client(a.endpoint(port), context=context)
                wall = {"local": [], "forwarded": []}
                cpu = {"local": [], "forwarded": []}
                cpu_a = {"local": [], "forwarded": []}
                for _ in range(100):  # connections up, the forwarder's connection to B up
                    local.call(b"")
                    forwarded.call(b"")
                before = a.info("fwd")["jobs"]["forwarded"]
                for _ in range(rounds):
                    for name, client in (("local", local), ("forwarded", forwarded)):
                        started, started_a, started_b = time.perf_counter(), tree_cpu(a), tree_cpu(b)
                        for _ in range(calls):
                            client.call(b"")
                        wall[name].append((time.perf_counter() - started) / calls * 1e6)
                        used_a, used_b = tree_cpu(a) - started_a, tree_cpu(b) - started_b
                        cpu[name].append((used_a + used_b) / calls * 1e6)
                        cpu_a[name].append(used_a / calls * 1e6)
                # Every call sent to A went to B: none ran on A, whose worker was held throughout.
                assert a.info("fwd")["jobs"]["forwarded"] - before == rounds * calls, a.info("fwd")["jobs"]
                for client in (local, forwarded):
                    client.close()
                del held
                holder.close()
            finally:
                stop_nodes(nodes)
                etcd.stop()
    finally:
        network.close()
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]), statistics.median(cpu_a[name]))
            for name in wall}


def balancing(args, tmp: str, app: str) -> None:
    """The three nodes on loopback: capacities, P2C against round robin, the cost of the choice."""
    nodes = [Node("fast-1", tmp, app, args.workers), Node("fast-2", tmp, app, args.workers),
             Node("slow", tmp, app, 1)]
    try:
        for node in nodes:
            node.warm()
        context = zmq.Context.instance()
        print(f"3 nodes: workers {[n.workers for n in nodes]}, {args.work * 1000:g} ms per request, "
              f"{args.inflight} in flight, {args.duration:g} s per measurement")
        capacity = {}
        for node in nodes:
            with ClusterClient("bench", "work", StaticNodes({node.name: node.endpoints["work"]}),
                               context=context) as alone:
                capacity[node.name] = load(alone, 2 * node.workers, args.duration)["rps"]
        total = sum(capacity.values())
        print("capacity alone: " + ", ".join(f"{n} {rps:,.0f} req/s" for n, rps in capacity.items())
              + f"; sum {total:,.0f} req/s")
        endpoints = {n.name: n.endpoints["work"] for n in nodes}
        blind = StaticNodes(endpoints)
        weighed = StaticNodes(endpoints, slots={n.name: n.workers for n in nodes})
        policies = {P2C_SLOTS: (weighed, power_of_two_choices), P2C: (blind, power_of_two_choices),
                    RR: (blind, None)}
        results: dict[str, list[dict]] = {policy: [] for policy in policies}
        for _ in range(args.rounds):
            for policy, (static, choose) in policies.items():
                with ClusterClient("bench", "work", static, context=context,
                                   choose=choose or RoundRobin()) as client:
                    result = load(client, args.inflight, args.duration)
                results[policy].append(result)
                share = ", ".join(f"{n} {c / sum(result['where'].values()):.0%}"
                                  for n, c in sorted(result["where"].items()))
                print(f"  {policy:31}: {result['rps']:7,.0f} req/s ({result['rps'] / total:.2f}x capacity), "
                      f"p50 {result['p50_ms']:6.1f} ms, p99 {result['p99_ms']:6.1f} ms, errors "
                      f"{result['errors']}; requests: {share}"
                      + (f"; first error: {result['first_error']}" if result["errors"] else ""))
        rr_p99 = statistics.median(r["p99_ms"] for r in results[RR])
        for policy in (P2C_SLOTS, P2C):
            p99 = statistics.median(r["p99_ms"] for r in results[policy]) / rr_p99
            throughput = statistics.median(r["rps"] for r in results[policy]) / total
            print(f"{policy}: p99 / round robin's {p99:.2f} (goal <= 0.5), throughput / capacity "
                  f"{throughput:.2f} (goal >= 0.9)")
        cost = choice_cost(nodes, args.calls)
        (plain, plain_cpu), (cluster, cluster_cpu) = cost["native_client"], cost["cluster_client"]
        print(f"one call at a time, no-op handler: native_client {plain:.0f} us, cluster client "
              f"{cluster:.0f} us ({cluster / plain:.2f}x); client CPU per call {plain_cpu:.0f} us against "
              f"{cluster_cpu:.0f} us (+{cluster_cpu - plain_cpu:.0f} us)")
    finally:
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of P2C and round robin")
    parser.add_argument("--work", type=float, default=0.02, help="seconds each request sleeps in a worker")
    parser.add_argument("--workers", type=int, default=4, help="workers of each of the two fast nodes")
    parser.add_argument("--inflight", type=int, default=18, help="requests in flight against the cluster")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls for the cost of the choice")
    parser.add_argument("--forward-calls", type=int, default=1000,
                        help="sequential calls per round for the cost of a forward (0: skip it)")
    parser.add_argument("--forward-rounds", type=int, default=5, help="alternating rounds for the cost of a forward")
    parser.add_argument("--forward-only", action="store_true", help="measure only the cost of a forward")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cocaine-bench-") as tmp:
        app = os.path.join(tmp, "app.py")
        with open(app, "w") as f:
            f.write(APP.format(work=args.work))
        if not args.forward_only:
            balancing(args, tmp, app)
        if args.forward_calls:
            cost = forward_cost(app, args.forward_calls, args.forward_rounds)
            if isinstance(cost, str):
                print(f"one forward: not measured ({cost})")
            else:
                (local, local_cpu, local_a), (forwarded, forwarded_cpu, forwarded_a) = cost["local"], cost["forwarded"]
                print(f"one call at a time, no-op handler on node B: answered by B {local:.0f} us, forwarded by "
                      f"A to B {forwarded:.0f} us (+{forwarded - local:.0f} us, {forwarded / local:.2f}x); "
                      f"CPU per call, both nodes' daemons and workers, {local_cpu:.0f} us against "
                      f"{forwarded_cpu:.0f} us (+{forwarded_cpu - local_cpu:.0f} us); node A's share {local_a:.0f} "
                      f"us against {forwarded_a:.0f} us")


if __name__ == "__main__":
    main()
