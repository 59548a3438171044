"""Timers that fire once per cluster (docs/cluster.md): three nodes, each tick on exactly one node,
counted by its scheduled time; the firing node killed; "scope": "node" firing everywhere."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter

import pytest
import zmq

from cluster_support import TTL
from support import manifest, python_app, wait_for

PUBSUB = 9400
APP = '''
import json

def tick(request):
    # A manual-scheduler's run answers when to run next: in 0.2 s.
    return "0.2" if "run" in request.meta else json.dumps(request.meta)
'''


class Ticks:
    """Every result the task publishes, on every node: (node, scheduled time), in arrival order."""

    def __init__(self, zmq_context: zmq.Context, nodes, topic: str) -> None:
        self.fired: list[tuple[str, float, float]] = []  # (node, scheduled, received)
        self.metas: list[dict] = []
        self._stop = threading.Event()
        self._socks = []
        for node in nodes:
            sock = zmq_context.socket(zmq.SUB)
            sock.linger = 0
            sock.subscribe(f"{topic} ".encode())
            sock.connect(node.endpoint(PUBSUB))
            self._socks.append((node.name, sock))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for _, sock in self._socks:
            poller.register(sock, zmq.POLLIN)
        names = {sock: name for name, sock in self._socks}
        while not self._stop.is_set():
            for sock, _ in poller.poll(100):
                topic, meta, *_ = sock.recv_multipart()
                meta = json.loads(meta)
                self.metas.append(meta)
                self.fired.append((names[sock], meta["scheduled"], time.monotonic()))

    def by(self, node: str) -> list[float]:
        return [scheduled for name, scheduled, _ in self.fired if name == node]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for _, sock in self._socks:
            sock.close(0)


def start_app(node, tmp_path, task: dict) -> None:
    node.create("timed", manifest(python_app(tmp_path, APP), {"tick": task}, pool_limit=2)
                | {"pubsub": {"endpoint": f"tcp://*:{PUBSUB}"}})


def up_names(node) -> set[str]:
    return {name for name, entry in node.cluster()["nodes"].items() if entry["up"]}


def first_node(cluster, name):
    return next(node for node in cluster if node.name == name)


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP", "partition"])
def test_recurring_timer_fires_each_tick_once_when_the_firing_node_dies(cluster, tmp_path, zmq_context, fault,
                                                                        network):
    """SIGSTOP: the frozen node wakes up after its lease expired, with overdue ticks of its own; its
    claims are fenced, so none of those fires a second time. partition: its link is cut, then back."""
    interval = 0.2
    ticks = Ticks(zmq_context, cluster, "tick")
    try:
        start_app(cluster[0], tmp_path, {"type": "recurring-timer", "interval": interval * 1000})
        wait_for(lambda: len(ticks.fired) >= 15, timeout=15, message="15 ticks")
        victim = first_node(cluster, ticks.fired[-1][0])  # the node that fired last
        killed_at = time.monotonic()
        if fault == "SIGKILL":
            victim.kill()
        elif fault == "SIGSTOP":
            victim.signal(signal.SIGSTOP)
        else:
            network.partition(victim.index)
        wait_for(lambda: sum(1 for _, _, at in ticks.fired if at > killed_at) >= 10, timeout=10,
                 message="10 ticks after the fault")
        if fault != "SIGKILL":
            wait_for(lambda: victim.name not in up_names(cluster[0] if victim is not cluster[0] else cluster[1]),
                     timeout=TTL + 1, message="the node's lease gone")
            woken_at = time.monotonic()
            if fault == "SIGSTOP":
                victim.signal(signal.SIGCONT)
            else:
                network.partition(victim.index, cut=False)
            # Back in the cluster under a new lease (a cut connection may first have to time out),
            # it fires its share of the ticks again.
            wait_for(lambda: any(name == victim.name and at > woken_at for name, _, at in ticks.fired), timeout=20,
                     message="the node firing again")
            wait_for(lambda: sum(1 for _, _, at in ticks.fired if at > woken_at) >= 15, timeout=10,
                     message="15 ticks after it came back")
    finally:
        ticks.close()
    scheduled = [s for _, s, _ in ticks.fired]
    twice = [s for s, n in Counter(scheduled).items() if n > 1]
    assert not twice, f"ticks fired twice: {twice}"
    ordered = sorted(scheduled)
    gaps = [b - a for a, b in zip(ordered, ordered[1:])]
    assert max(gaps) <= TTL + interval, f"largest gap {max(gaps):.3f} s"
    assert all(abs(g / interval - round(g / interval)) < 0.01 for g in gaps)  # ticks on the shared schedule
    if fault == "SIGKILL":
        assert not [s for name, s, at in ticks.fired if name == victim.name and at > killed_at + 0.5]
    print(f"{len(scheduled)} ticks, none twice; largest gap {max(gaps):.3f} s; by node "
          f"{dict(Counter(name for name, _, _ in ticks.fired))}")


def test_scope_node_fires_on_every_node(cluster, tmp_path, zmq_context):
    ticks = Ticks(zmq_context, cluster, "tick")
    try:
        start_app(cluster[0], tmp_path, {"type": "recurring-timer", "interval": 200, "scope": "node"})
        wait_for(lambda: all(len(ticks.by(node.name)) >= 3 for node in cluster), timeout=15,
                 message="every node firing")
    finally:
        ticks.close()


def test_cron_fires_each_second_once_across_the_cluster_and_catches_up(cluster, tmp_path, zmq_context):
    ticks = Ticks(zmq_context, cluster, "tick")
    try:
        start_app(cluster[0], tmp_path, {"type": "cron", "schedule": "* * * * * *", "catch-up": "once"})
        wait_for(lambda: len(ticks.fired) >= 4, timeout=15, message="four cron ticks")
        # The whole cluster down for a few ticks: the first node back fires once for the ticks missed.
        for node in cluster:
            node.kill()
        # The last tick fired anywhere, as etcd recorded its claim (its result may never have been
        # published: the node that fired it was killed).
        node = cluster[0]
        claim = node.etcd.ctl("get", "--print-value-only", f"/cocaine/{node.instance}/timers/timed/tick")
        last = int(claim.split()[0]) / 1000.0
        for node in cluster:
            node.close()
        wait_for(lambda: time.time() > last + 2.5, timeout=5, message="two ticks missed by everyone")
        restarted = time.monotonic()
        cluster[0].start()
        first = wait_for(lambda: next((m for (name, _, at), m in zip(ticks.fired, ticks.metas)
                                       if name == cluster[0].name and at > restarted), None), timeout=15,
                         message="a tick after the restart")
    finally:
        ticks.close()
    scheduled = [s for _, s, _ in ticks.fired]
    assert len(set(scheduled)) == len(scheduled), ticks.fired
    assert all(s == int(s) for s in scheduled)  # whole seconds: the schedule's own instants
    assert first["missed"] == first["scheduled"] - last - 1 >= 2, (last, first)


@pytest.mark.parametrize("task", [{"type": "drifting-timer", "interval": 200},
                                  {"type": "manual-scheduler", "first": 0}], ids=["drifting-timer", "manual-scheduler"])
def test_owned_timers_fire_on_one_node_and_fail_over(cluster, tmp_path, zmq_context, task):
    ticks = Ticks(zmq_context, cluster, "tick")
    try:
        start_app(cluster[0], tmp_path, task)
        wait_for(lambda: len(ticks.fired) >= 5, timeout=15, message="five runs")
        owners = {name for name, _, _ in ticks.fired}
        assert len(owners) == 1, ticks.fired  # one owner while it lives
        owner = first_node(cluster, owners.pop())
        killed_at = time.monotonic()
        owner.kill()
        wait_for(lambda: sum(1 for _, _, at in ticks.fired if at > killed_at) >= 3, timeout=15,
                 message="runs on another node")
    finally:
        ticks.close()
    after = [(name, at) for name, _, at in ticks.fired if at > killed_at]
    assert len({name for name, _ in after}) == 1 and after[0][0] != owner.name, after
    takeover = after[0][1] - killed_at
    # The owner's key goes within about TTL + 0.5 s (etcd checks leases twice a second), then the next
    # attempt (every 0.2 s interval, every 0.5 s for manual-scheduler) takes over.
    assert takeover <= TTL + 0.5 + 0.5 + 0.5, f"took over {takeover:.2f} s after the kill"
    print(f"{task['type']}: taken over by {after[0][0]} {takeover:.2f} s after the owner was killed")
