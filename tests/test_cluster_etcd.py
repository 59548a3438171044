"""etcd stopped for about ten seconds and restarted, under a three-node cluster (docs/cluster.md):
every node keeps serving, writes answer "cluster storage unavailable" and change nothing, reads
answer the node's view marked stale; once etcd is back, everything converges again."""

from __future__ import annotations

import time


from cluster_support import call
from support import manifest, python_app, wait_for

OUTAGE = 10.0  # seconds etcd stays down
PORT = 9300
APP = '''
def echo(request):
    return request.body
'''
NODES = {"node-0", "node-1", "node-2"}


def app(tmp_path, port: int) -> dict:
    return manifest(python_app(tmp_path, APP), {"echo": {"type": "zeromq-server", "endpoint": f"tcp://*:{port}"}})


def error_of(node, action: str, apps) -> str:
    reply = node.request({"version": 2, "action": action, "apps": apps})
    name = next(iter(apps))
    return reply[name].get("error", "")


def test_nodes_ride_out_an_etcd_outage_and_converge_after_it(cluster, tmp_path, zmq_context, etcd):
    a, b, c = cluster
    a.create("echo", app(tmp_path, PORT))
    wait_for(lambda: all(node.running("echo") for node in cluster), timeout=10, message="echo on every node")
    wait_for(lambda: all(set(node.cluster()["apps"].get("echo", {})) == NODES for node in cluster), timeout=10,
             message="every node seeing echo on all three")

    etcd.stop()
    down_since = time.monotonic()
    try:
        wait_for(lambda: all(node.cluster()["stale"] for node in cluster), timeout=10,
                 message="every node's view marked stale")
        view = a.cluster()
        assert view["problem"].startswith("cluster storage unavailable: ")
        assert set(view["nodes"]) == NODES and "node-0" in view["apps"]["echo"]  # the last view, kept
        # Writes change nothing anywhere and say why.
        assert error_of(a, "create", {"new": app(tmp_path, PORT + 1)}).startswith("cluster storage unavailable: ")
        assert error_of(b, "delete", ["echo"]).startswith("cluster storage unavailable: ")
        assert error_of(c, "reload", ["echo"]).startswith("cluster storage unavailable: ")
        # Every node keeps serving its apps for the whole outage.
        served = 0
        while time.monotonic() - down_since < OUTAGE:
            for node in cluster:
                assert call(zmq_context, node.endpoint(PORT), b"still") == [b"ok", b"still"]
                served += 1
        for node in cluster:
            info = node.info()
            assert set(info["apps"]) == {"echo"} and info["apps"]["echo"]["state"] == "running"
    finally:
        etcd.start()

    # Back: the views are current again, every node is a member (lease TTLs restart with etcd), and
    # writes reach every node.
    wait_for(lambda: all(not node.cluster()["stale"] for node in cluster), timeout=15, message="views current again")
    wait_for(lambda: all(set(node.cluster()["nodes"]) == NODES for node in cluster), timeout=15,
             message="every node seeing three after the outage")
    # The writes refused during the outage changed nothing, then either.
    for node in cluster:
        assert set(node.info()["apps"]) == {"echo"} and node.running("echo")
    assert etcd.ctl("get", "--prefix", "--keys-only", f"/cocaine/{a.instance}/storage/apps/").split() == \
        [f"/cocaine/{a.instance}/storage/apps/echo"]
    b.create("new", app(tmp_path, PORT + 1))
    wait_for(lambda: all(node.running("new") for node in cluster), timeout=10, message="new on every node")
    for node in cluster:
        assert call(zmq_context, node.endpoint(PORT + 1), b"new") == [b"ok", b"new"]
    print(f"served {served} requests during the {OUTAGE:.0f} s outage")
