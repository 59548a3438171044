"""The cluster backbone end to end (docs/cluster.md): a real etcd, cocained nodes each in its own
network namespace. Manifests reach every node, membership and load, faults (SIGKILL, SIGSTOP, etcd
stopped and restarted, a node restarted with emptied local state, two nodes creating one app at once)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq

from cluster_support import (ClusterNode, Etcd, Network, call, etcd_unavailable, namespaces_unavailable,
                             start_nodes, stop_nodes)
from support import CLI, RUN_TIMEOUT, manifest, python_app, wait_for

pytestmark = pytest.mark.skipif(bool(namespaces_unavailable() or etcd_unavailable()),
                                reason=str(namespaces_unavailable() or etcd_unavailable()))

APP = '''
import time

def echo(request):
    return request.body

def slow(request):
    time.sleep(float(request.body or b"0.2"))
    return b"done"
'''
PORT = 9100
TTL = 3


@pytest.fixture(scope="module")
def network():
    net = Network(hosts=4)
    yield net
    net.close()


@pytest.fixture(scope="module")
def etcd(network, tmp_path_factory):
    server = Etcd(tmp_path_factory.mktemp("etcd"), network.gateway).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def cluster(request, tmp_path, context, network, etcd):
    """Three nodes in their own instance (a fresh key space in the module's etcd)."""
    instance = request.node.name.replace("[", "-").replace("]", "")[:60]
    nodes = start_nodes(tmp_path, context, network, etcd, 3, instance=instance, ttl=TTL)
    yield nodes
    stop_nodes(nodes)


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
def test_create_reload_delete_on_any_node_reach_every_node(cluster, tmp_path, context):
    a, b, c = cluster
    created = a.create("echo", app_manifest(tmp_path))
    assert created["state"] == "running"
    wait_for(lambda: running_everywhere(cluster, "echo"), timeout=10, message="echo running on every node")
    for node in cluster:  # the same manifest, the same endpoint, on every host
        assert call(context, node.endpoint(PORT), b"hi") == [b"ok", b"hi"]

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


def test_two_nodes_create_the_same_app_at_once(cluster, tmp_path, context):
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


def test_a_late_node_and_a_node_restarted_with_emptied_state_converge(cluster, tmp_path, context, network, etcd):
    a, b, c = cluster
    a.create("echo", app_manifest(tmp_path))
    late = ClusterNode(tmp_path / "late", context, network, 3, etcd, instance=a.instance, ttl=TTL).start()
    try:
        wait_for(lambda: late.running("echo"), timeout=15, message="the late node running echo")
        assert call(context, late.endpoint(PORT), b"late") == [b"ok", b"late"]
        # Killed, an app created meanwhile, restarted with its local state gone: it gets every app.
        c.kill()
        c.close()
        shutil.rmtree(c.tmp)
        b.create("other", app_manifest(tmp_path, port=PORT + 10))
        c.start()
        wait_for(lambda: c.running("echo") and c.running("other"), timeout=15,
                 message="the restarted node running both apps")
        assert call(context, c.endpoint(PORT + 10), b"back") == [b"ok", b"back"]
    finally:
        stop_nodes([late])
