"""``zeromq-sink`` and ``zeromq-subscriber`` end to end: messages in, results published, chaining."""

import itertools
import json

import pytest
import zmq

from support import APP_WAIT_FOR_FILE, Subscriber, endpoint, manifest, python_app, wait_for

APP = APP_WAIT_FOR_FILE + '''
import json, os

GO = os.path.join(os.path.dirname(__file__), "go")

def sink(request):
    if request.body == b"fail":
        raise ValueError("refused")
    return request.body.upper()

def gated(request):
    wait_for_file(GO)
    return request.body

def listen(request):
    return json.dumps({"topic": request.meta["topic"], "body": request.text()})

def relay(request):
    return json.dumps({"upstream": request.meta["upstream"], "body": request.text()})

def tick(request):
    return "tick %d" % request.meta["tick"]
'''


def create(daemon, tmp_path, name, tasks, **engine):
    """Create an app; return a subscriber to its pubsub endpoint and the endpoint."""
    pubsub = endpoint()
    subscriber = Subscriber(daemon.context, pubsub)
    m = dict(manifest(python_app(tmp_path, APP, name=f"{name}.py"), tasks, **engine), pubsub={"endpoint": pubsub})
    daemon.create(name, m)
    return subscriber, pubsub


def socket(context, kind, address, bind=False):
    sock = context.socket(kind)
    sock.linger = 0
    (sock.bind if bind else sock.connect)(address)
    return sock


def counters(daemon, app, task):
    return daemon.info(app)["tasks"][task]["counters"]


def test_sink_messages_become_jobs_whose_results_are_published(daemon, tmp_path, zmq_context):
    address = endpoint()
    sub, _ = create(daemon, tmp_path, "app", {"sink": {"type": "zeromq-sink", "endpoint": address}})
    push = socket(zmq_context, zmq.PUSH, address)
    try:
        sub.first(lambda: push.send(b"probe"))
        push.send_multipart([b"hel", b"lo"])  # frames are one body
        topic, meta, payload = sub.until(lambda topic, meta, payload: payload == [b"HELLO"])
        assert topic == "sink result" and meta["app"] == "app" and meta["message"] >= 2
        push.send(b"fail")
        topic, meta, payload = sub.until(lambda topic, meta, payload: topic == "sink error")
        assert json.loads(payload[0]) == {"code": 502, "message": "ValueError: refused"}
        push.send(b"still")
        assert sub.until(lambda topic, meta, payload: topic == "sink result")[2] == [b"STILL"]
    finally:
        push.close(0)
        sub.close()


def test_a_busy_sink_stops_reading_instead_of_queueing(daemon, tmp_path, zmq_context):
    address = endpoint()
    sub, _ = create(daemon, tmp_path, "app", {"gated": {"type": "zeromq-sink", "endpoint": address,
                                                        "max-in-flight": 2}})
    push = socket(zmq_context, zmq.PUSH, address)
    try:
        for i in range(6):
            push.send(b"%d" % i)
        wait_for(lambda: counters(daemon, "app", "gated")["paused"], message="the sink to pause")
        info = daemon.info("app")["tasks"]["gated"]
        assert info["counters"]["received"] == 2 and info["stats"]["accepted"] == 2
        (tmp_path / "go").touch()
        wait_for(lambda: daemon.info("app")["tasks"]["gated"]["stats"]["succeeded"] == 6, message="every message")
        assert not counters(daemon, "app", "gated")["paused"]
    finally:
        push.close(0)
        sub.close()


def test_subscriber_takes_matching_messages_from_several_publishers(daemon, tmp_path, zmq_context):
    first, second = endpoint(), endpoint()
    pubs = [socket(zmq_context, zmq.PUB, address, bind=True) for address in (first, second)]
    sub, _ = create(daemon, tmp_path, "app", {"listen": {"type": "zeromq-subscriber", "endpoint": [first, second],
                                                         "subscription": ["keep", "also"]}})
    probes = itertools.count()
    try:
        for pub in pubs:  # each publisher reaches the app
            sub.first(lambda pub=pub: pub.send_multipart([b"keep.probe", b"%d" % next(probes)]))
        pubs[0].send_multipart([b"drop.this", b"filtered out"])
        pubs[1].send_multipart([b"also.that", b"pay", b"load"])
        topic, meta, payload = sub.until(lambda topic, meta, payload: b"probe" not in payload[0])
        assert topic == "listen result" and meta["topic"] == "also.that"
        assert json.loads(payload[0]) == {"topic": "also.that", "body": "payload"}
        pubs[0].send(b"keep-single-frame")
        topic, meta, payload = sub.until(lambda topic, meta, payload: b"probe" not in payload[0])
        assert json.loads(payload[0]) == {"topic": "keep-single-frame", "body": "keep-single-frame"}
    finally:
        for pub in pubs:
            pub.close(0)
        sub.close()


def test_apps_chain_through_their_pubsub_endpoints(daemon, tmp_path, zmq_context):
    _, upstream = create(daemon, tmp_path, "a", {"tick": {"type": "recurring-timer", "interval": 50}})
    stray = endpoint()
    pub = socket(zmq_context, zmq.PUB, stray, bind=True)
    sub, _ = create(daemon, tmp_path, "b", {"relay": {"type": "zeromq-subscriber", "endpoint": [upstream, stray],
                                                      "subscription": "tick result", "format": "cocaine"}})
    try:
        topic, meta, payload = sub.until(lambda topic, meta, payload: topic == "relay result")
        relayed = json.loads(payload[0])
        assert relayed["body"].startswith("tick ")
        assert relayed["upstream"]["app"] == "a" and relayed["upstream"]["task"] == "tick"
        assert meta["topic"] == "tick result" and meta["app"] == "b"
        # A message that is not a cocaine publication is dropped and counted, not run.
        wait_for(lambda: pub.send_multipart([b"tick result", b"{not json"]) or
                 counters(daemon, "b", "relay")["malformed"] > 0, message="a malformed message to be counted")
    finally:
        pub.close(0)
        sub.close()


@pytest.mark.parametrize("task, error", [
    ({"type": "zeromq-sink"}, "tasks.t.endpoint: expected a ZeroMQ endpoint"),
    ({"type": "zeromq-sink", "endpoint": "tcp://127.0.0.1:1", "backlog": 0},
     "tasks.t.backlog: expected an integer >= 1, got 0"),
    ({"type": "zeromq-subscriber", "endpoint": ["tcp://127.0.0.1:1", "nowhere"]},
     "tasks.t.endpoint[1]: expected a ZeroMQ endpoint"),
    ({"type": "zeromq-subscriber", "endpoint": []},
     "tasks.t.endpoint: expected a string or a non-empty list of strings, got []"),
    ({"type": "zeromq-subscriber", "endpoint": "tcp://127.0.0.1:1", "subscription": [3]},
     "tasks.t.subscription[0]: expected a string, got 3"),
    ({"type": "zeromq-subscriber", "endpoint": "tcp://127.0.0.1:1", "format": "json"},
     "tasks.t.format: expected one of 'raw', 'cocaine', got 'json'"),
])
def test_bad_configuration_is_rejected_naming_the_field(daemon, tmp_path, task, error):
    m = dict(manifest(python_app(tmp_path, APP), {"t": task}), pubsub={"endpoint": endpoint()})
    reply = daemon.request({"version": 2, "action": "create", "apps": {"app": m}})
    assert error in reply["app"]["error"]
