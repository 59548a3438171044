"""The cluster backbone end to end (docs/cluster.md): a real etcd, cocained nodes each in its own
network namespace. Manifests reach every node, membership and load, faults (SIGKILL, SIGSTOP, etcd
stopped and restarted, a node restarted with emptied local state, two nodes creating one app at once)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from cluster_support import TTL, ClusterNode, call, stop_nodes
from cocaine.cluster.client import ClusterClient, ClusterError, EtcdNodes, NodeSilent
from cocaine.core.errors import Code
from cocaine.drivers.native_client import Client as NativeClient
from support import CLI, RUN_TIMEOUT, free_port, manifest, python_app, wait_for

APP = '''
import hashlib
import time

from cocaine.python import Response

def echo(request):
    return request.body

def native(request):  # native-server: a short job, so that some are in flight on every node
    time.sleep(0.05)
    return request.body

def slow(request):
    time.sleep(float(request.body or b"0.2"))
    return b"done"

def upload(request):  # a streamed request on any driver: its digest, read after a pause
    time.sleep(0.5)
    return hashlib.sha256(b"".join(request)).hexdigest()

def web(request):  # http-server: sleeps ?SECONDS, answers with a status, headers and two chunks
    time.sleep(float(request.meta["query"] or "0.2"))
    return Response(iter([b"done ", request.meta["path"].encode()]), status=201,
                    headers=[("Content-Type", "text/plain"), ("X-Twice", "a"), ("X-Twice", "b")])
'''
PORT = 9100
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def app_manifest(tmp_path, port: int = PORT, **engine) -> dict:
    return manifest(python_app(tmp_path, APP), {
        "echo": {"type": "zeromq-server", "endpoint": f"tcp://*:{port}"},
        "slow": {"type": "zeromq-server", "endpoint": f"tcp://*:{port + 1}"},
    }, **engine)


def running_everywhere(nodes, app: str) -> bool:
    return all(node.running(app) for node in nodes)


def admin(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "--endpoint", node.management, *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def up_nodes(node) -> set[str]:
    return {name for name, entry in node.cluster()["nodes"].items() if entry["up"]}


# -- manifests reach every node ---------------------------------------------------------------------
def test_create_reload_delete_on_any_node_reach_every_node(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    created = a.create("echo", app_manifest(tmp_path))
    assert created["state"] == "running"
    wait_for(lambda: running_everywhere(cluster, "echo"), timeout=10, message="echo running on every node")
    for node in cluster:  # the same manifest, the same endpoint, on every host
        assert call(zmq_context, node.endpoint(PORT), b"hi") == [b"ok", b"hi"]

    generations = {node.name: node.info("echo")["pool"]["generation"] for node in cluster}
    reply = b.request({"version": 2, "action": "reload", "apps": ["echo"]})
    assert "error" not in reply["echo"], reply
    wait_for(lambda: all(node.info("echo")["pool"]["generation"] > generations[node.name] for node in cluster),
             timeout=10, message="the reload on every node")

    reply = c.request({"version": 2, "action": "delete", "apps": ["echo"]})
    assert reply["echo"] == {"deleted": True}
    wait_for(lambda: all("echo" not in node.info()["apps"] for node in cluster), timeout=10,
             message="echo gone from every node")
    assert "echo" not in a.etcd.ctl("get", "--prefix", "--keys-only", f"/cocaine/{a.instance}/storage/")


def test_the_quick_start(cluster, etcd):
    """docs/cluster.md's quick start, on this test's nodes: create the clustered echo example on one
    node, see it on all three from another, call it through the cluster client."""
    a, b, c = cluster
    created = admin(a, "create", "echo", str(EXAMPLES / "echo" / "cluster.json"))
    assert created.returncode == 0, created.stderr
    wait_for(lambda: sum("echo running" in line for line in admin(c, "nodes").stdout.splitlines()) == 3, timeout=10,
             message="echo running on all three in node-2's `nodes`")
    cluster_option = ["--cluster", f"etcd://{etcd.address}:{etcd.port}", "--instance", a.instance]
    for _ in range(3):
        called = subprocess.run([*CLI, "call", "echo", "echo", "hello", *cluster_option], capture_output=True,
                                text=True, timeout=RUN_TIMEOUT)
        assert (called.returncode, called.stdout) == (0, "hello"), called.stderr
    counted = subprocess.run([*CLI, "call", "echo", "count", "3", *cluster_option], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT)
    assert (counted.returncode, counted.stdout) == (0, "1\n2\n3\n"), counted.stderr


def test_two_nodes_create_the_same_app_at_once(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    manifests = {}
    for node in (a, b):
        m = app_manifest(tmp_path)
        m["version"] = node.index + 1  # tells whose manifest won
        manifests[node.name] = m
    replies = {}
    barrier = threading.Barrier(2)

    def create(node):
        barrier.wait()
        replies[node.name] = node.request({"version": 2, "action": "create",
                                           "apps": {"twice": manifests[node.name]}})["twice"]

    threads = [threading.Thread(target=create, args=(node,)) for node in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [name for name, reply in replies.items() if "error" not in reply]
    losers = [reply["error"] for reply in replies.values() if "error" in reply]
    assert len(winners) == 1, replies
    assert len(losers) == 1 and "already exists" in losers[0], replies
    version = manifests[winners[0]]["version"]
    wait_for(lambda: all(node.running("twice") and node.info("twice")["version"] == version for node in cluster),
             timeout=15, message="every node running the winner's manifest")


def test_a_late_node_and_a_node_restarted_with_emptied_state_converge(cluster, tmp_path, zmq_context, network, etcd):
    a, b, c = cluster
    a.create("echo", app_manifest(tmp_path))
    late = ClusterNode(tmp_path / "late", zmq_context, network, 3, etcd, instance=a.instance, ttl=TTL).start()
    try:
        wait_for(lambda: late.running("echo"), timeout=15, message="the late node running echo")
        assert call(zmq_context, late.endpoint(PORT), b"late") == [b"ok", b"late"]
        # Killed, an app created meanwhile, restarted with its local state gone: it gets every app.
        c.kill()
        c.close()
        shutil.rmtree(c.tmp)
        b.create("other", app_manifest(tmp_path, port=PORT + 10))
        c.start()
        wait_for(lambda: c.running("echo") and c.running("other"), timeout=15,
                 message="the restarted node running both apps")
        assert call(zmq_context, c.endpoint(PORT + 10), b"back") == [b"ok", b"back"]
    finally:
        stop_nodes([late])


def test_a_node_cut_off_from_etcd_converges_when_back_even_after_compaction(cluster, tmp_path, zmq_context,
                                                                           network, etcd):
    """While node-2 is cut off, an app is deleted and another created, and etcd compacts its history
    past node-2's last revision: back, node-2 cannot watch on from there, reads everything again and
    applies the difference."""
    a, b, c = cluster
    a.create("echo", app_manifest(tmp_path))
    wait_for(lambda: running_everywhere(cluster, "echo"), timeout=10, message="echo on every node")
    network.partition(c.index)
    try:
        wait_for(lambda: "node-2" not in up_nodes(a), timeout=TTL + 1, message="node-2's lease gone")
        assert a.request({"version": 2, "action": "delete", "apps": ["echo"]})["echo"] == {"deleted": True}
        b.create("other", app_manifest(tmp_path, port=PORT + 10))
        header = json.loads(etcd.ctl("get", "--write-out", "json", "/"))["header"]
        etcd.ctl("compact", str(header["revision"]))
        # Back only once node-2 has noticed (its log is on this host's disk): a cut shorter than its
        # timeouts would leave its watch running, to catch up without a re-read.
        wait_for(lambda: "cluster storage unavailable" in c.log(), timeout=20, message="node-2 noticing the cut")
    finally:
        network.partition(c.index, cut=False)
    wait_for(lambda: c.running("other") and "echo" not in c.info()["apps"], timeout=30,
             message="node-2 running other and not echo")
    # By a full read (its watch could not resume from a compacted revision), logged before it applied it.
    reads = [int(n) for n in re.findall(r"following etcd at \S+ from revision (\d+)", c.log())]
    assert max(reads) >= header["revision"], reads
    wait_for(lambda: "node-2" in up_nodes(a), timeout=10, message="node-2 a member again")
    assert call(zmq_context, c.endpoint(PORT + 10), b"back") == [b"ok", b"back"]


# -- membership and load ----------------------------------------------------------------------------
def test_info_and_nodes_show_every_node_its_apps_and_their_load(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    wait_for(lambda: up_nodes(a) == {"node-0", "node-1", "node-2"}, timeout=10, message="three nodes up")
    a.create("echo", app_manifest(tmp_path, pool_limit=3))
    for _ in range(20):
        call(zmq_context, b.endpoint(PORT), b"x")

    def everywhere():
        view = c.cluster()
        return view if set(view["apps"].get("echo", {})) == {"node-0", "node-1", "node-2"} else None

    view = wait_for(everywhere, timeout=10, message="echo running on every node in node-2's view")
    assert view["stale"] is False and view["node"] == "node-2"
    assert all(state == "running" for state in view["apps"]["echo"].values())
    for node in cluster:
        entry = view["nodes"][node.name]
        assert entry["up"] is True and entry["address"] == node.address
        assert entry["management"] == [node.management]
        load = entry["apps"]["echo"]["load"]
        assert load["pool-limit"] == 3 and load["queue-limit"] == 100 and load["workers"] >= 0
    # The load figures are the engine's: node-1 served the requests, so it has a worker and a rate.
    wait_for(lambda: c.cluster()["nodes"]["node-1"]["apps"]["echo"]["load"]["workers"] >= 1, timeout=5,
             message="node-1's worker in the record")
    record = json.loads(a.etcd.ctl("get", "--print-value-only", f"/cocaine/{a.instance}/nodes/node-1"))
    assert record["apps"]["echo"]["tasks"]["echo"] == {"type": "zeromq-server", "endpoint": f"tcp://{b.address}:{PORT}"}

    human = admin(a, "nodes")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("cluster etcd://") and "seen from node-0" in lines[0] and "STALE" not in lines[0]
    for node in cluster:
        row = next(line for line in lines if line.startswith(node.name))
        assert node.address in row and " yes " in row and "echo running" in row
    as_json = admin(a, "--json", "nodes")
    assert as_json.returncode == 0, as_json.stderr
    assert set(json.loads(as_json.stdout)["nodes"]) == {"node-0", "node-1", "node-2"}


def test_nodes_on_a_node_alone_says_it_is_not_in_a_cluster(daemon):
    result = subprocess.run([*CLI, "--endpoint", daemon.management, "nodes"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    assert result.returncode != 0
    assert "is not in a cluster (start cocained with --cluster)" in result.stderr
    assert "cluster" not in daemon.info()


class Load:
    """A plain client per node sending requests in a loop (zeromq-server); counts answers and failures."""

    def __init__(self, zmq_context, nodes) -> None:
        self.answered = {node.name: 0 for node in nodes}
        self.failed = {node.name: 0 for node in nodes}
        self.stopped = {node.name: threading.Event() for node in nodes}
        self.threads = [threading.Thread(target=self._run, args=(zmq_context, node), daemon=True) for node in nodes]
        for thread in self.threads:
            thread.start()

    def _run(self, zmq_context, node) -> None:
        while not self.stopped[node.name].is_set():
            try:
                reply = call(zmq_context, node.endpoint(PORT), b"load", timeout=2)
            except zmq.Again:
                reply = None
            if reply == [b"ok", b"load"]:  # anything else counts as a failure (a thread's assert would go unseen)
                self.answered[node.name] += 1
            else:
                self.failed[node.name] += 1

    def stop(self, name: str | None = None) -> None:
        for key, event in self.stopped.items():
            if name is None or key == name:
                event.set()
        if name is None:
            for thread in self.threads:
                thread.join(5)


class ClusterLoad:
    """Threads sending requests through one cluster client (nodes from etcd) in a loop: each
    request's (start, node, error or None), and the requests in flight per node."""

    def __init__(self, zmq_context, source, threads: int = 6, timeout: float = 3.0) -> None:
        self.client = ClusterClient("echo", "native", source, context=zmq_context, timeout=timeout)
        self.done: list[tuple[float, str | None, ClusterError | None]] = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started, node = time.monotonic(), None
            try:
                request = self.client.request(b"load")
                node = request.node
                answer = request.read()
                wrong = None if answer == b"load" else ClusterError(Code.SERVER, f"answered {answer!r}", [])
                self.done.append((started, node, wrong))
            except ClusterError as e:
                self.done.append((started, getattr(e, "node", node), e))

    def answered(self, node: str) -> int:
        return sum(1 for _, name, error in self.done if name == node and error is None)

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(10)
        self.client.close()


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_a_killed_or_frozen_node_under_load_fails_only_its_own_requests_and_leaves_every_view(
        cluster, tmp_path, zmq_context, etcd, fault):
    """Under load from plain clients (one per node) and from a cluster client spreading requests over
    the three: the faulted node's in-flight requests fail, each with an error naming the node;
    every other request is answered; the node leaves every view within TTL + 1 s, and then the
    cluster client sends it nothing more."""
    a, b, c = cluster
    a.create("echo", manifest(python_app(tmp_path, APP), {
        "echo": {"type": "zeromq-server", "endpoint": f"tcp://*:{PORT}"},
        "native": {"type": "native-server", "endpoint": f"tcp://*:{PORT + 3}"}}))
    wait_for(lambda: running_everywhere(cluster, "echo"), timeout=10, message="echo on every node")
    wait_for(lambda: all(up_nodes(node) == {"node-0", "node-1", "node-2"} for node in cluster), timeout=10,
             message="every node seeing three")
    source = EtcdNodes([f"{etcd.address}:{etcd.port}"], instance=a.instance)
    wait_for(lambda: len(source.serving("echo", "native")) == 3, timeout=10, message="the client seeing three")
    load = Load(zmq_context, cluster)
    spread = ClusterLoad(zmq_context, source)
    try:
        wait_for(lambda: all(load.answered[node.name] > 5 and spread.answered(node.name) > 5 for node in cluster),
                 timeout=10, message="load on every node")
        load.stop(c.name)  # a plain client of the faulted node only waits for its deadline
        wait_for(lambda: spread.client.in_flight().get("node-2", 0) >= 1, timeout=5,
                 message="a request in flight on node-2")  # each takes 50 ms: still there at the fault
        faulted = time.monotonic()
        if fault == "SIGKILL":
            c.kill()
        else:
            c.signal(signal.SIGSTOP)
        wait_for(lambda: all("node-2" not in up_nodes(node) for node in (a, b)), timeout=TTL + 1,
                 message=f"node-2 gone from the others' views after {fault}")
        wait_for(lambda: "node-2" not in source.records(), timeout=1, message="node-2 gone from the client's view")
        gone = time.monotonic()
        gone_after = gone - faulted
        before = dict(load.answered)
        wait_for(lambda: all(load.answered[n.name] > before[n.name] + 5 for n in (a, b)), timeout=10,
                 message="the other nodes still answering")
        # Past the deadline (and grace) of every request sent before node-2 left the client's view.
        wait_for(lambda: any(started > gone + 5 for started, _, _ in spread.done), timeout=15,
                 message="requests started well after node-2 left")
        assert load.failed[a.name] == 0 and load.failed[b.name] == 0, load.failed
        assert f"/cocaine/{a.instance}/nodes/node-2" not in a.etcd.ctl("get", "--prefix", "--keys-only",
                                                                        f"/cocaine/{a.instance}/nodes/")
        failed = [(started, node, error) for started, node, error in spread.done if error is not None]
        assert failed, "no request was in flight on node-2 at the fault"
        for started, node, error in failed:  # only node-2's, each saying so
            assert node == "node-2" and isinstance(error, NodeSilent), (node, error)
            assert error.message.startswith("node node-2: no answer within the request's 3 s"), error
            assert started < gone, "a request sent to node-2 after it left the view"
        assert not [1 for started, node, _ in spread.done if node == "node-2" and started > gone]
        others = [error for _, node, error in spread.done if node != "node-2"]
        assert others and not any(others), [e for e in others if e]
        print(f"{fault}: node-2 left both views {gone_after:.2f} s after the fault (TTL {TTL} s); "
              f"{len(failed)} of its requests failed, {sum(1 for e in others if e is None)} answered elsewhere")
        if fault == "SIGSTOP":  # woken up, it joins again under a new lease
            c.signal(signal.SIGCONT)
            wait_for(lambda: "node-2" in up_nodes(a), timeout=10, message="node-2 back after SIGCONT")
            assert call(zmq_context, c.endpoint(PORT), b"again") == [b"ok", b"again"]
    finally:
        load.stop()
        spread.stop()
        source.close()


# -- options and a node whose etcd is away ------------------------------------------------------------
@pytest.mark.parametrize("args, error", [
    (["--cluster", "http://127.0.0.1:2379"], "expected etcd://HOST:PORT[,HOST:PORT...]"),
    (["--cluster", "etcd://127.0.0.1:notaport"], "bad port"),
    (["--node-name", "a"], "--node-name and --advertise-address need --cluster"),
    (["--cluster", "etcd://127.0.0.1:1", "--storage", "files"], "cannot go with --storage files"),
    (["--cluster", "etcd://127.0.0.1:1", "--node-name", "../x"], "--node-name: invalid name"),
    (["--cluster", "etcd://127.0.0.1:1", "--cluster-ttl", "1"], "--cluster-ttl: etcd grants leases of at least 2 s"),
])
def test_bad_cluster_options_are_refused_naming_the_option(tmp_path, args, error):
    result = subprocess.run([sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", str(tmp_path),
                             "--runtime-dir", str(tmp_path / "run"), "--management", "tcp://127.0.0.1:0", *args],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr


def test_a_node_whose_etcd_is_away_starts_serves_reads_and_refuses_writes(make_daemon, tmp_path):
    port = free_port()  # nothing listens there
    node = make_daemon("--cluster", f"etcd://127.0.0.1:{port}", "--node-name", "alone").start()
    view = node.info()["cluster"]
    assert view["stale"] is True and view["problem"].startswith("cluster storage unavailable: ")
    assert view["nodes"] == {} and view["store"] == f"etcd://127.0.0.1:{port}"
    reply = node.request({"version": 2, "action": "create", "apps": {"echo": app_manifest(tmp_path)}})
    assert reply["echo"]["error"].startswith("cluster storage unavailable: "), reply
    assert node.info()["apps"] == {}  # the app it started for the create was stopped again


@pytest.mark.parametrize("bound, published", [
    ("tcp://*:9100", "tcp://10.0.0.5:9100"),
    ("tcp://0.0.0.0:9100", "tcp://10.0.0.5:9100"),
    ("tcp://lo:9100", "tcp://127.0.0.1:9100"),  # loopback: this host only, as a bind to 127.0.0.1
    ("tcp://localhost:9100", "tcp://127.0.0.1:9100"),
    ("tcp://eth0:9100", "tcp://10.0.0.5:9100"),
    ("tcp://192.168.1.7:9100", "tcp://192.168.1.7:9100"),
    ("tcp://node-a.example.org:9100", "tcp://node-a.example.org:9100"),
    ("ipc:///run/x.sock", "ipc:///run/x.sock"),
    ("*:8080", "10.0.0.5:8080"),  # http-server, raw-socket-server: host:port
    ("127.0.0.1:8080", "127.0.0.1:8080"),
])
def test_records_publish_endpoints_that_other_hosts_can_reach(bound, published):
    from cocaine.cluster.membership import reachable

    assert reachable(bound, "10.0.0.5") == published


# -- server-side forwarding ---------------------------------------------------------------------------
def seen_on_every_node(cluster, app: str = "full", seen_by=None) -> None:
    """Wait until the app runs on every node in the view of ``seen_by`` (default: every node)."""
    names = {f"node-{i}" for i in range(len(cluster))}
    wait_for(lambda: all(set(node.cluster()["apps"].get(app, {})) == names for node in seen_by or cluster),
             timeout=10, message=f"the app {app!r} on every node in the view of {len(seen_by or cluster)} node(s)")


def ready_on_every_node(cluster, app: str = "full", seen_by=None) -> None:
    """Wait for an idle worker of the app on every node, then as :func:`seen_on_every_node`."""
    wait_for(lambda: all(node.running(app) and node.info(app)["pool"]["idle"] == 1 for node in cluster),
             timeout=15, message="a ready worker on every node")
    seen_on_every_node(cluster, app, seen_by)


def burst(zmq_context, address: str, count: int, body: bytes, timeout: float = 20.0) -> list[list[bytes]]:
    """``count`` requests at once on one DEALER; the replies, in arrival order."""
    sock = zmq_context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    try:
        for _ in range(count):
            sock.send_multipart([b"", body])
        replies = []
        while len(replies) < count:
            assert sock.poll(timeout * 1000), f"{len(replies)} of {count} replies"
            replies.append(sock.recv_multipart()[1:])
        return replies
    finally:
        sock.close(0)


def test_overflow_forward_sends_what_a_full_node_cannot_take_to_its_least_loaded_peers_one_hop_only(
        cluster, tmp_path, zmq_context):
    a, b, c = cluster
    # One worker taking one job at a time and a queue of one: each node takes two requests at once.
    a.create("full", app_manifest(tmp_path, pool_limit=1, pool_min=1, concurrency=1, queue_limit=1,
                                  overflow="forward"))
    ready_on_every_node(cluster)
    replies = burst(zmq_context, a.endpoint(PORT + 1), 6, b"1.0")
    assert replies == [[b"ok", b"done"]] * 6, replies  # 2 here, 2 on each peer
    info = a.info("full")
    assert info["jobs"]["forwarded"] == 4 and info["jobs"]["rejected"] == 0
    for node in (b, c):
        assert node.info("full")["jobs"]["accepted"] == 2

    # Ten at once: the peers are full too, and a forwarded request is never forwarded again.
    replies = burst(zmq_context, a.endpoint(PORT + 1), 10, b"1.0")
    done = [r for r in replies if r == [b"ok", b"done"]]
    refused = [r for r in replies if r[0] == b"error"]
    assert len(done) == 6 and len(refused) == 4, replies
    assert all(r[1] == b"503" and b"queue is full" in r[2] for r in refused), refused
    for node in (b, c):
        assert node.info("full")["jobs"]["forwarded"] == 0


def test_a_request_forwarded_to_a_node_that_is_killed_fails_with_an_error_naming_it(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    a.create("full", app_manifest(tmp_path, pool_limit=1, pool_min=1, concurrency=1, queue_limit=1,
                                  overflow="forward"))
    ready_on_every_node(cluster, seen_by=[a])
    sock = zmq_context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(a.endpoint(PORT + 1))
    try:
        for _ in range(4):  # two run on node-0 (a worker, the queue), one on each peer
            sock.send_multipart([b"", b"3.0"])
        wait_for(lambda: b.info("full")["pool"]["busy"] == 1 and c.info("full")["pool"]["busy"] == 1, timeout=10,
                 message="a forwarded request running on each peer")
        c.kill()
        replies = []
        while len(replies) < 4:
            assert sock.poll(20_000), replies
            replies.append(sock.recv_multipart()[1:])
    finally:
        sock.close(0)
    assert replies.count([b"ok", b"done"]) == 3, replies  # everything else is answered
    assert [b"error", b"503", b"node node-2 left the cluster before answering the forwarded request"] in replies


BROKEN_ON_NODE_0 = '''
import socket, sys

_probe = socket.socket()
try:
    _probe.bind((NODE_0_ADDRESS, 0))  # only node-0's network namespace has this address
except OSError:
    pass
else:
    sys.exit(3)  # node-0's workers die as they start: the app is broken there, and only there
finally:
    _probe.close()
'''


def test_overflow_forward_sends_what_reaches_a_broken_app_to_a_peer(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    code = BROKEN_ON_NODE_0.replace("NODE_0_ADDRESS", repr(a.address)) + APP
    a.create("full", manifest(python_app(tmp_path, code), {"echo": {"type": "zeromq-server", "endpoint": f"tcp://*:{PORT}"}},
                              pool_limit=1, fork_server=False, overflow="forward"))
    wait_for(lambda: all(node.running("full") for node in (b, c)), timeout=15, message="the app running on the peers")
    seen_on_every_node(cluster, seen_by=[a])
    # The first request makes node-0 start a worker, which dies: the request, queued meanwhile, and
    # those refused while the pool backs off, all run on the peers.
    replies = burst(zmq_context, a.endpoint(PORT), 5, b"x")
    assert replies == [[b"ok", b"x"]] * 5, replies
    assert a.info("full")["state"] == "broken"
    assert a.info("full")["jobs"]["forwarded"] == 5
    assert sum(node.info("full")["jobs"]["accepted"] for node in (b, c)) == 5


def test_overflow_refuse_is_the_default_even_in_a_cluster(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    a.create("full", app_manifest(tmp_path, pool_limit=1, pool_min=1, concurrency=1, queue_limit=1))
    wait_for(lambda: a.info("full")["pool"]["idle"] == 1, timeout=15, message="a ready worker")
    replies = burst(zmq_context, a.endpoint(PORT + 1), 4, b"0.5")
    assert sum(r[0] == b"error" and r[1] == b"503" for r in replies) == 2, replies
    assert a.info("full")["jobs"]["forwarded"] == 0


def test_overflow_forward_sends_what_reaches_a_stopping_app_to_a_peer(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    a.create("full", app_manifest(tmp_path, pool_limit=1, pool_min=1, concurrency=1, overflow="forward"))
    ready_on_every_node(cluster, seen_by=[a])
    sock = zmq_context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(a.endpoint(PORT + 1))
    try:
        sock.send_multipart([b"", b"3.0"])  # keeps node-0's app stopping for 3 s once it is told to stop
        wait_for(lambda: a.info("full")["pool"]["busy"] == 1, timeout=10, message="the long job running")
        a.signal(signal.SIGTERM)
        # Its management has stopped answering; its record says the app is stopping.
        wait_for(lambda: b.cluster()["nodes"]["node-0"]["apps"]["full"]["state"] == "stopping", timeout=10,
                 message="node-0's app stopping in node-1's view")
        for _ in range(3):
            sock.send_multipart([b"", b"0.01"])
        replies = []
        while len(replies) < 4:
            assert sock.poll(20_000), replies
            replies.append(sock.recv_multipart()[1:])
    finally:
        sock.close(0)
    assert replies.count([b"ok", b"done"]) == 4, replies  # the long one here, the three others on peers
    assert sum(node.info("full")["jobs"]["accepted"] for node in (b, c)) == 3
    assert a.proc.wait(20) == 0


def http_burst(address: str, port: int, count: int, seconds: float) -> list[tuple[int, list[str], bytes]]:
    """``count`` HTTP requests at once, one connection each: (status, X-Twice values, body) of each."""
    answers, barrier = [], threading.Barrier(count)

    def one(i: int) -> None:
        connection = http.client.HTTPConnection(address, port, timeout=20)
        try:
            barrier.wait()
            connection.request("GET", f"/r{i}?{seconds}")
            response = connection.getresponse()
            answers.append((response.status, response.headers.get_all("X-Twice"), response.read()))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


@pytest.mark.parametrize("driver", ["native-server", "http-server"])
def test_overflow_forward_works_on_the_native_and_http_servers(cluster, tmp_path, zmq_context, driver):
    """The zeromq-server test above, on the other request-response drivers: what node-0 cannot take
    runs on its peers, and the client gets the same answer, HTTP status, headers and chunks included."""
    a, b, c = cluster
    port = PORT + 2
    task = ({"type": "native-server", "endpoint": f"tcp://*:{port}"} if driver == "native-server"
            else {"type": "http-server", "endpoint": f"*:{port}"})
    handler = "slow" if driver == "native-server" else "web"
    a.create("full", manifest(python_app(tmp_path, APP), {handler: task}, pool_limit=1, pool_min=1, concurrency=1,
                              queue_limit=1, overflow="forward"))
    ready_on_every_node(cluster)
    if driver == "native-server":
        with NativeClient(a.endpoint(port), context=zmq_context, timeout=20) as client:
            calls = [client.request(b"1.0") for _ in range(6)]
            assert [call.read() for call in calls] == [b"done"] * 6
    else:
        answers = http_burst(a.address, port, 6, 1.0)
        assert sorted(answers) == sorted((201, ["a", "b"], f"done /r{i}".encode()) for i in range(6)), answers
    assert a.info("full")["jobs"]["forwarded"] == 4  # 2 here (a worker and the queue), 2 on each peer
    assert [node.info("full")["jobs"]["accepted"] for node in (b, c)] == [2, 2]


def send_streamed(driver: str, address: str, port: int, body: bytes, zmq_context) -> bytes:
    """``body`` as a streamed request, in 64 KiB chunks; the whole answer."""
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    if driver == "raw-socket-server":
        with socket.create_connection((address, port), timeout=20) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: sock.recv(65536), b""))
    if driver == "http-server":
        connection = http.client.HTTPConnection(address, port, timeout=20)
        try:
            connection.request("POST", "/", body=iter(chunks), encode_chunked=True)
            response = connection.getresponse()
            assert response.status == 200, (response.status, response.read())
            return response.read()
        finally:
            connection.close()
    with NativeClient(f"tcp://{address}:{port}", context=zmq_context, timeout=20) as client:
        request = client.request(chunks[0], stream=True)
        for chunk in chunks[1:]:
            request.write(chunk)
        request.end()
        return request.read()


@pytest.mark.parametrize("driver", ["raw-socket-server", "http-server", "native-server"])
def test_overflow_forward_carries_streamed_requests_under_flow_control(cluster, tmp_path, zmq_context, driver):
    """A streamed request (every raw-socket-server request, a chunked HTTP body, a native stream) is
    forwarded as it arrives: its chunks and end follow it to the peer, and the peer's credit comes
    back to the driver, so a 1 MiB body (four flow-control windows) goes through whole."""
    a, b, c = cluster
    port = PORT + 4
    endpoint = f"tcp://*:{port}" if driver == "native-server" else f"*:{port}"
    a.create("full", manifest(python_app(tmp_path, APP), {"upload": {"type": driver, "endpoint": endpoint}},
                              pool_limit=1, pool_min=1, concurrency=1, queue_limit=1, overflow="forward"))
    ready_on_every_node(cluster)
    bodies = [bytes([i]) * (1 << 20) for i in range(6)]
    answers: dict[int, bytes] = {}

    def send(i: int) -> None:
        answers[i] = send_streamed(driver, a.address, port, bodies[i], zmq_context)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {i: hashlib.sha256(body).hexdigest().encode() for i, body in enumerate(bodies)}
    assert a.info("full")["jobs"]["forwarded"] == 4  # 2 here (a worker and the queue), 2 on each peer
    assert [node.info("full")["jobs"]["accepted"] for node in (b, c)] == [2, 2]


def test_a_forwarded_request_whose_client_goes_away_is_cancelled_on_the_peer(cluster, tmp_path, zmq_context):
    a, b, c = cluster
    port = PORT + 4
    a.create("full", manifest(python_app(tmp_path, APP), {"upload": {"type": "raw-socket-server", "endpoint": f"*:{port}"}},
                              pool_limit=1, pool_min=1, concurrency=1, queue_limit=1, overflow="forward"))
    ready_on_every_node(cluster, seen_by=[a])
    held = [socket.create_connection((a.address, port), timeout=20) for _ in range(2)]  # requests that do not end
    try:
        wait_for(lambda: a.info("full")["queue"]["depth"] == 1, timeout=10, message="node-0's worker and queue taken")
        with socket.create_connection((a.address, port), timeout=20) as gone:
            gone.sendall(b"x" * 1000)
            wait_for(lambda: sum(node.info("full")["pool"]["busy"] for node in (b, c)) == 1, timeout=10,
                     message="the forwarded request running on a peer")
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        # The origin's driver cancels the job; the cancel reaches the peer, whose handler stops reading.
        wait_for(lambda: sum(node.info("full")["pool"]["busy"] for node in (b, c)) == 0, timeout=10,
                 message="the peer's handler stopped")
        assert sum(node.info("full")["jobs"]["failed"] for node in (b, c)) == 1
        for sock in held:
            sock.shutdown(socket.SHUT_WR)
        assert [b"".join(iter(lambda s=sock: s.recv(65536), b"")) for sock in held] == \
            [hashlib.sha256(b"").hexdigest().encode()] * 2
    finally:
        for sock in held:
            sock.close()
