"""The load-aware cluster client (cocaine.cluster.client) against real cocained nodes on loopback.

Discovery reads node records from a real etcd (one per module). Until nodes register themselves,
the tests write each node's record as docs/cluster.md specifies, under a lease, for daemons that
really run the app at the endpoints the record names.
"""

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time

import aetcd
import pytest

from cocaine.cluster import records
from cocaine.cluster.client import ClusterClient, EtcdNodes, NodeError, NoNode, StaticNodes, never_ran
from cocaine.core.errors import JobError
from cocaine.drivers.native_client import Client
from support import APP_WAIT_FOR_FILE, Daemon, admin, endpoint, free_port, manifest, python_app, wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"

# Each node's copy of the app knows its node's name, so an answer says where it ran; every run of
# `work` is logged to a file first, so a test counts runs rather than trusting answers.
APP = APP_WAIT_FOR_FILE + '''
import json, os
NODE = NODE_NAME
HERE = os.path.dirname(__file__)

def echo(request):
    return NODE.encode()

def work(request):
    job = request.json()
    with open(job["log"], "a") as log:
        log.write(NODE + "\\n")
    if job.get("crash"):
        os._exit(3)
    if job.get("wait"):
        wait_for_file(job["wait"])
    return json.dumps({"node": NODE, "deadline": request.meta.get("deadline")})

def hold(request):
    wait_for_file(os.path.join(HERE, "release"))
    return NODE.encode()

def upper(request):
    for chunk in request:
        yield NODE.encode() + b":" + chunk.upper()
'''
TASKS = ("echo", "work", "hold", "upper")


class Node:
    """A real cocained running the test app as ``app``, with one native-server per task."""

    def __init__(self, name, tmp, context, **engine):
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir()
        self.daemon = Daemon(self.dir / "daemon", context).start()
        self.endpoints = {task: endpoint() for task in TASKS}
        self.manifest = manifest(python_app(self.dir, APP.replace("NODE_NAME", repr(name))),
                                 {task: {"type": "native-server", "endpoint": address}
                                  for task, address in self.endpoints.items()}, **engine)
        self.daemon.create("app", self.manifest)

    def release(self):
        (self.dir / "release").touch()

    def engine(self):
        return self.daemon.info("app")

    def record(self, **load) -> records.NodeRecord:
        """This node's record as the contract has it, with its real load unless ``load`` says otherwise."""
        info = self.engine()
        engine = self.manifest["engine"]
        figures = {"queue": info["queue"]["depth"], "queue-limit": info["queue"]["limit"],
                   "busy": info["pool"]["busy"], "workers": info["pool"]["total"],
                   "pool-limit": engine.get("pool-limit", 1), "rps": 0, **load}
        return records.NodeRecord(
            name=self.name, address="127.0.0.1", management=[self.daemon.management], updated=time.time(),
            apps={"app": records.AppLoad(
                state=info["state"],
                tasks={task: {"type": "native-server", "endpoint": address} for task, address in self.endpoints.items()},
                load=figures)})

    def close(self):
        try:
            self.daemon.stop()
        finally:
            self.daemon.close()


@pytest.fixture
def nodes(tmp_path, zmq_context):
    made = []

    def make(*names, **engine):
        for name in names:
            made.append(Node(name, tmp_path, zmq_context, **engine))
        return made[-len(names):] if len(names) > 1 else made[-1]

    yield make
    for node in made:
        node.release()
    for node in made:
        node.close()


def static(task, *nodes):
    return StaticNodes({node.name: node.endpoints[task] for node in nodes})


def first_by_name(targets, score):
    """A policy for tests that need to know which node is tried first."""
    return min(targets, key=lambda t: t.node)


def fill(node, context, count=2):
    """Send ``count`` hold requests straight to ``node`` (they hold its workers, then its queue, until
    ``node.release()``); returns the native client and the calls."""
    client = Client(node.endpoints["hold"], context=context, timeout=30)
    calls = [client.request(b"") for _ in range(count)]
    return client, calls


def refuses(client, reason):
    """Whether a request to ``client``'s node is refused, for ``reason``, at once."""
    try:
        client.call(b"", timeout=0.5)  # a request queued before the refusals began times out
    except JobError as e:
        return e.code == 503 and reason in e.message
    return False


def queued(node):
    return node.engine()["queue"]["depth"]


def runs(log):
    return log.read_text().split() if log.exists() else []


# -- etcd ------------------------------------------------------------------------------------------
class Etcd:
    """A real etcd on loopback, with the test's own data directory."""

    def __init__(self, tmp):
        assert os.access(ETCD, os.X_OK), f"no etcd at {ETCD}: apt-get install etcd-server (.ci/run does)"
        self.tmp = tmp
        self.port, self.peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.start()

    def start(self):
        tmp, peer = self.tmp, self.peer
        self.log = open(tmp / "etcd.log", "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "test", "--data-dir", str(tmp / "data"),
             "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"test=http://127.0.0.1:{peer}",
             "--auto-compaction-mode=revision", "--auto-compaction-retention=1000"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._answers, timeout=20, message=f"etcd on {self.endpoint}")

    def _answers(self):
        assert self.proc.poll() is None, f"etcd exited with {self.proc.returncode} (log: {self.log.name})"
        try:
            self.run(lambda etcd: etcd.get(b"/"))
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def run(self, action):
        async def go():
            async with aetcd.Client(host="127.0.0.1", port=self.port, timeout=2) as etcd:
                return await action(etcd)
        return asyncio.run(go())

    def register(self, instance, record: records.NodeRecord, ttl=30) -> int:
        """Write ``record`` under a fresh lease, as a node does; returns the lease id."""
        async def put(etcd):
            lease = await etcd.lease(ttl)
            await etcd.put(records.node_key(instance, record.name).encode(), record.to_json(), lease=lease)
            return lease.id
        return self.run(put)

    def revoke(self, lease_id):
        """End a lease, as its expiry would: the node's record goes with it."""
        return self.run(lambda etcd: etcd.revoke_lease(lease_id))

    def put(self, key: str, value: bytes):
        return self.run(lambda etcd: etcd.put(key.encode(), value))

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    server = Etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.close()


@pytest.fixture
def instance(request):
    """A cluster name of the test's own, so tests sharing the etcd do not see each other's nodes."""
    return request.node.name.replace("[", "-").replace("]", "")


# -- balancing -------------------------------------------------------------------------------------
def test_answers_and_streams_like_the_native_client(nodes, zmq_context):
    a, b = nodes("a", "b")
    with ClusterClient("app", "upper", static("upper", a, b), context=zmq_context, timeout=20) as client:
        call = client.request(b"one", stream=True)
        chunks = iter(call)
        assert next(chunks) == f"{call.node}:ONE".encode()  # answered before the request ended
        call.write(b"two")
        call.end()
        assert list(chunks) == [f"{call.node}:TWO".encode()]
        assert client.in_flight() == {}
    with ClusterClient("app", "echo", static("echo", a, b), context=zmq_context, timeout=20) as client:
        assert {client.call(b"") for _ in range(20)} <= {b"a", b"b"}


def test_own_requests_in_flight_spread_the_load_without_reports(nodes, zmq_context):
    a, b = nodes("a", "b", pool_limit=1)
    with ClusterClient("app", "hold", static("hold", a, b), context=zmq_context, timeout=30) as client:
        calls = [client.request(b"") for _ in range(10)]
        where = [call.node for call in calls]
        assert sorted(client.in_flight().items()) == [("a", 5), ("b", 5)], where
        a.release(), b.release()
        assert sorted(call.read().decode() for call in calls) == sorted(where)
        assert client.in_flight() == {}


def test_power_of_two_choices_prefers_the_less_loaded_node(nodes, etcd, instance, zmq_context):
    a, b, c = nodes("a", "b", "c", pool_limit=2, concurrency=1)
    holder, held = fill(a, zmq_context, 4)  # a really is busy: both workers held, two waiting
    wait_for(lambda: queued(a) == 2, message="a's queue to hold two")
    etcd.register(instance, a.record())
    assert a.record().apps["app"].pressure == 2.0  # (2 queued + 2 busy) / 2 workers: loses every draw
    etcd.register(instance, b.record())
    etcd.register(instance, c.record())
    source = EtcdNodes([etcd.endpoint], instance)
    try:
        with ClusterClient("app", "echo", source, context=zmq_context, timeout=20) as client:
            counted = [client.call(b"").decode() for _ in range(60)]
        assert counted.count("a") == 0, counted
        assert counted.count("b") + counted.count("c") == 60
    finally:
        source.close()
    a.release()
    assert [call.read() for call in held] == [b"a"] * 4
    holder.close()


def test_a_node_whose_record_vanishes_gets_no_more_traffic(nodes, etcd, instance, zmq_context):
    a, b = nodes("a", "b")
    lease_a = etcd.register(instance, a.record())
    etcd.register(instance, b.record(busy=1, queue=1))  # busier: a takes everything while it is there
    source = EtcdNodes([etcd.endpoint], instance)
    try:
        with ClusterClient("app", "echo", source, context=zmq_context, timeout=20) as client:
            assert {client.call(b"") for _ in range(10)} == {b"a"}
            etcd.revoke(lease_a)
            wait_for(lambda: "a" not in source.records(), message="a's record to leave the client's view")
            assert {client.call(b"") for _ in range(20)} == {b"b"}
            etcd.revoke(etcd.register(instance, b.record()))
            wait_for(lambda: not source.records(), message="b's record to leave the client's view")
            with pytest.raises(NoNode, match="no running node serves app echo"):
                client.call(b"")
    finally:
        source.close()


def test_a_node_whose_app_is_not_running_is_never_chosen(nodes, etcd, instance, zmq_context):
    a, b = nodes("a", "b")
    stopping = a.record()
    stopping.apps["app"] = records.AppLoad("stopping", stopping.apps["app"].tasks, stopping.apps["app"].load)
    etcd.register(instance, stopping)
    etcd.register(instance, b.record(busy=1, queue=10))
    source = EtcdNodes([etcd.endpoint], instance)
    try:
        with ClusterClient("app", "echo", source, context=zmq_context, timeout=20) as client:
            assert {client.call(b"") for _ in range(10)} == {b"b"}
    finally:
        source.close()


def test_the_last_view_serves_while_etcd_is_down_and_the_watch_comes_back(nodes, tmp_path, zmq_context):
    own = tmp_path / "own-etcd"
    own.mkdir()
    server = Etcd(own)  # its own: stopping it must not disturb the other tests
    a, b = nodes("a", "b")
    try:
        server.register("default", a.record())
        server.put(records.node_key("default", "broken"), b'{"name": "broken", "address": 7}')
        source = EtcdNodes([server.endpoint])
        try:
            assert set(source.records()) == {"a"}  # the malformed record is left out
            with ClusterClient("app", "echo", source, context=zmq_context, timeout=20) as client:
                server.close()
                assert {client.call(b"") for _ in range(5)} == {b"a"}
                server.start()
                server.register("default", b.record(busy=1, queue=10))
                wait_for(lambda: "b" in source.records(), timeout=20, message="the watch to resume after etcd came back")
                assert set(source.records()) == {"a", "b"}
        finally:
            source.close()
    finally:
        server.close()


# -- resends ---------------------------------------------------------------------------------------
def test_a_request_refused_with_a_full_queue_is_resent_to_another_node(nodes, tmp_path, zmq_context):
    a, b = nodes("a", "b", pool_limit=1, concurrency=1, queue_limit=1)
    holder, held = fill(a, zmq_context, 2)  # one running, one queued: a's queue is full
    wait_for(lambda: queued(a) == 1, message="a's queue to fill")
    log = tmp_path / "runs"
    with ClusterClient("app", "work", static("work", a, b), context=zmq_context, timeout=20,
                       choose=first_by_name) as client:
        call = client.request(json.dumps({"log": str(log)}).encode())
        assert json.loads(call.read())["node"] == "b"
        assert [node for node, _, _ in call.refusals] == ["a"]
        assert "queue is full" in call.refusals[0][2]
    with ClusterClient("app", "upper", static("upper", a, b), context=zmq_context, timeout=20,
                       choose=first_by_name) as client:
        streamed = client.request(b"one", stream=True)  # refused at once, found out while reading
        streamed.write(b"two")
        streamed.end()
        assert list(streamed) == [b"b:ONE", b"b:TWO"]  # resent whole: every chunk written so far
        assert [node for node, _, _ in streamed.refusals] == ["a"]
    assert runs(log) == ["b"]
    a.release()
    assert [c.read() for c in held] == [b"a", b"a"]
    holder.close()


def test_a_request_to_a_stopping_app_is_resent_and_keeps_its_deadline(nodes, tmp_path, zmq_context):
    a, b = nodes("a", "b", pool_limit=1, concurrency=1, queue_limit=5)
    log = tmp_path / "runs"
    timeout = 20.0
    with ClusterClient("app", "work", static("work", a, b), context=zmq_context, timeout=timeout,
                       choose=first_by_name) as client:
        running = client.request(json.dumps({"log": str(log), "wait": str(tmp_path / "never")}).encode())
        wait_for(lambda: runs(log) == ["a"], message="the first request to run on a")
        sent_at = time.time()
        waiting = client.request(json.dumps({"log": str(log)}).encode())  # queued behind it
        wait_for(lambda: queued(a) == 1, message="the second request to queue on a")
        # a stops: it refuses new requests, and after its stop-timeout (5 s) it drops its queue and
        # fails the running request. The delete answers then.
        deleting = threading.Thread(target=a.daemon.request, args=({"version": 2, "action": "delete",
                                                                     "apps": ["app"]},))
        deleting.start()
        probe = Client(a.endpoints["echo"], context=zmq_context, timeout=10)
        wait_for(lambda: refuses(probe, "is stopping"), message="a's app to be stopping")
        probe.close()
        refused_now = client.request(json.dumps({"log": str(log)}).encode())
        assert json.loads(refused_now.read())["node"] == "b"
        assert "is stopping" in refused_now.refusals[0][2]
        answer = json.loads(waiting.read())
        resent_at = time.time()
        with pytest.raises(NodeError) as stopped:  # it had started: never resent
            running.read()
        deleting.join(30)
    assert answer["node"] == "b"
    assert "stopped before the job ran" in waiting.refusals[0][2]
    # The deadline set when the request was first sent, not restarted by the resend.
    assert resent_at - sent_at > 4.0
    assert answer["deadline"] == pytest.approx(sent_at + timeout, abs=0.5)
    assert (stopped.value.node, stopped.value.code) == ("a", 503)
    assert "stopped before the job finished" in stopped.value.message and not stopped.value.refusals
    assert sorted(runs(log)) == ["a", "b", "b"]


def test_a_request_that_started_is_never_sent_twice(nodes, tmp_path, zmq_context):
    a, b = nodes("a", "b", pool_limit=1)
    log = tmp_path / "runs"
    with ClusterClient("app", "work", static("work", a, b), context=zmq_context, timeout=20,
                       choose=first_by_name) as client:
        with pytest.raises(NodeError) as crashed:  # the worker dies mid-request
            client.call(json.dumps({"log": str(log), "crash": True}).encode())
        assert crashed.value.node == "a" and crashed.value.code == 500, crashed.value
        assert runs(log) == ["a"]
        late = tmp_path / "late"
        with pytest.raises(NodeError) as timed_out:  # the handler outlives the request's deadline
            client.call(json.dumps({"log": str(log), "wait": str(late)}).encode(), timeout=1.0)
        assert timed_out.value.node == "a" and timed_out.value.code == 504, timed_out.value
        assert "deadline exceeded" in timed_out.value.message
        late.touch()  # the handler may finish now: its answer is dropped, nothing runs again
        wait_for(lambda: a.engine()["pool"]["busy"] == 0, message="the late handler to finish")
        assert runs(log) == ["a", "a"]
        assert client.in_flight() == {}


def test_every_node_refusing_ends_in_one_error_naming_them(nodes, zmq_context):
    a, b = nodes("a", "b", pool_limit=1, concurrency=1, queue_limit=1)
    holders = [fill(node, zmq_context, 2) for node in (a, b)]
    wait_for(lambda: queued(a) == 1 and queued(b) == 1, message="both queues to fill")
    with ClusterClient("app", "echo", static("echo", a, b), context=zmq_context, timeout=20) as client:
        with pytest.raises(NoNode) as refused:
            client.call(b"")
        assert refused.value.code == 503
        assert {node for node, _, _ in refused.value.refusals} == {"a", "b"}
        assert "no other node serves app echo" in str(refused.value) and "queue is full" in str(refused.value)
        assert client.in_flight() == {}
    a.release(), b.release()
    for holder, held in holders:
        assert len({c.read() for c in held}) == 1
        holder.close()


def test_only_refusals_before_a_worker_had_the_request_count_as_never_run():
    assert never_ran(JobError(503, "queue is full (queue-limit 1)"))
    assert never_ran(JobError(503, "app 'x' is stopping"))
    assert never_ran(JobError(503, "app 'x' is broken: exited with 1 (next start attempt in 1.0 s)"))
    assert never_ran(JobError(503, "app 'x' stopped before the job ran"))
    assert not never_ran(JobError(503, "app 'x' stopped before the job finished"))
    assert not never_ran(JobError(503, "cancelled by the client"))
    assert not never_ran(JobError(504, "deadline exceeded before the request arrived"))
    assert not never_ran(JobError(500, "queue is full"))


# -- cocaine-admin call --cluster -------------------------------------------------------------------
def test_cli_calls_through_a_static_list_and_resends_a_refusal(nodes, tmp_path, zmq_context):
    a, b = nodes("a", "b", pool_limit=1, concurrency=1, queue_limit=1)
    holder, held = fill(a, zmq_context, 2)
    wait_for(lambda: queued(a) == 1, message="a's queue to fill")
    log = tmp_path / "runs"
    spec = f"a={a.endpoints['work']},b={b.endpoints['work']}"
    for _ in range(3):  # whichever node it tries first, b runs it
        done = admin("call", "app", "work", json.dumps({"log": str(log)}), "--cluster", spec)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["node"] == "b"
    assert runs(log) == ["b", "b", "b"]
    a.release()
    assert [c.read() for c in held] == [b"a", b"a"]
    holder.close()


def test_cli_calls_through_etcd_and_names_what_failed(nodes, etcd, instance, tmp_path):
    a = nodes("a")
    etcd.register(instance, a.record())
    cluster = f"etcd://{etcd.endpoint}"
    done = admin("call", "app", "upper", "x", "--cluster", cluster, "--instance", instance)
    assert (done.returncode, done.stdout) == (0, "a:X"), done.stderr
    log = tmp_path / "runs"
    crashed = admin("call", "app", "work", json.dumps({"log": str(log), "crash": True}),
                    "--cluster", cluster, "--instance", instance)
    assert crashed.returncode == 1 and "call app work: error 500: node a: " in crashed.stderr, crashed.stderr
    assert runs(log) == ["a"]
    nobody = admin("call", "app", "echo", "--cluster", cluster, "--instance", instance + "-empty")
    assert nobody.returncode == 1, nobody.stderr
    assert "error 503: no running node serves app echo" in nobody.stderr
    bad = admin("call", "app", "echo", "--cluster", "a=127.0.0.1:1")
    assert bad.returncode == 2 and "expected [NAME=]ENDPOINT" in bad.stderr, bad.stderr


def test_a_node_that_is_down_is_passed_over_without_sending(nodes, tmp_path, zmq_context):
    a, b = nodes("a", "b")
    nowhere = endpoint()  # nothing listens there
    with ClusterClient("app", "echo", StaticNodes({"a": a.endpoints["echo"], "b": b.endpoints["echo"],
                                                   "gone": nowhere}),
                       context=zmq_context, timeout=20) as client:
        assert {client.call(b"") for _ in range(30)} == {b"a", b"b"}
        a.daemon.proc.kill()  # SIGKILL: its connections drop
        a.daemon.proc.wait(10)
        # Until the client's socket has seen the drop, a request could still leave for a and be lost
        # with it (then it ends at its deadline, as it may have run): wait for that view.
        to_a = client._connection(a.endpoints["echo"])
        wait_for(lambda: not to_a.connected(), message="the client to see a's connection drop")
        answers = [client.request(b"") for _ in range(30)]
        assert {call.read() for call in answers} == {b"b"}
        passed_over = {node for call in answers for node, _, message in call.refusals}
        assert passed_over <= {"a", "gone"} and "gone" in passed_over
        assert all("(not sent)" in message for call in answers for _, _, message in call.refusals)
        assert client.in_flight() == {}
