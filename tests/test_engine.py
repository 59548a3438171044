"""The engine end to end: pool and queue limits, heartbeat timeout, crashes; every request answered."""

import json
import os
import signal

import zmq

from support import dealer, endpoint, manifest, python_app, wait_for

APP = '''
import os, time

def echo(request):
    return request.body

def slow(request):
    time.sleep(float(request.body))
    return b"done"

def hang(request):
    while True:
        pass

def crash(request):
    os._exit(7)

def pid(request):
    return str(os.getpid())
'''


def server(daemon, tmp_path, task, **engine):
    address = endpoint()
    m = manifest(python_app(tmp_path, APP), {task: {"type": "zeromq-server", "endpoint": address}}, **engine)
    daemon.create("app", m)
    return address


def send_all(daemon, address, bodies):
    """Send every body on its own DEALER-as-REQ frames; return the replies in order of arrival."""
    sock = dealer(daemon.context, address)
    try:
        for body in bodies:
            sock.send_multipart([b"", body])
        return [sock.recv_multipart()[1:] for _ in bodies]
    finally:
        sock.close(0)


def test_pool_limit_and_concurrency_are_honoured(daemon, tmp_path):
    address = server(daemon, tmp_path, "slow", pool_limit=2, concurrency=1, queue_limit=50)
    replies = send_all(daemon, address, [b"0.2"] * 6)
    assert replies == [[b"ok", b"done"]] * 6
    info = daemon.info("app")
    assert info["pool"]["spawned"] == 2 and info["pool"]["total"] == 2
    assert info["queue"]["peak"] >= 1


def test_a_full_queue_answers_at_once_with_503(daemon, tmp_path):
    address = server(daemon, tmp_path, "slow", pool_limit=1, concurrency=1, queue_limit=2)
    # One worker is starting (capacity 1) and the queue holds 2 more: the rest are refused.
    replies = send_all(daemon, address, [b"0.3"] * 6)
    refused = [r for r in replies if r[0] == b"error"]
    done = [r for r in replies if r == [b"ok", b"done"]]
    assert len(done) == 3 and len(refused) == 3
    assert all(r == [b"error", b"503", b"queue is full (queue-limit 2)"] for r in refused)
    stats = daemon.info("app")["tasks"]["slow"]["stats"]
    assert stats["rejected"] == 3 and stats["succeeded"] == 3


def test_a_silent_worker_is_killed_after_the_heartbeat_timeout(daemon, tmp_path):
    address = server(daemon, tmp_path, "hang", heartbeat_timeout=1)
    client = daemon.client(address, timeout=15)
    reply = client.call(b"")
    assert reply[:2] == [b"error", b"504"]
    assert b"heartbeat-timeout (1 s)" in reply[2]
    wait_for(lambda: daemon.info("app")["pool"]["total"] == 0, message="the hung worker to be gone")


def test_a_worker_crash_fails_its_jobs_and_the_app_keeps_serving(daemon, tmp_path):
    address = endpoint()
    m = manifest(python_app(tmp_path, APP), {
        "crash": {"type": "zeromq-server", "endpoint": address},
        "echo": {"type": "zeromq-server", "endpoint": (echo_address := endpoint())},
    }, pool_limit=1)
    daemon.create("app", m)
    reply = daemon.client(address).call(b"")
    assert reply == [b"error", b"500", b"worker exited with status 7"]
    assert daemon.client(echo_address).call(b"alive") == [b"ok", b"alive"]
    info = daemon.info("app")
    assert info["pool"]["spawned"] == 2
    assert info["tasks"]["crash"]["stats"]["failed-by-code"] == {"500": 1}


def test_a_killed_worker_is_noticed_and_replaced(daemon, tmp_path):
    address = server(daemon, tmp_path, "pid")
    client = daemon.client(address)
    first = int(client.call(b"")[1])
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: daemon.info("app")["pool"]["total"] == 0, message="the dead worker to be noticed")
    second = int(client.call(b"")[1])
    assert second != first


def test_an_app_that_cannot_load_answers_with_the_reason(daemon, tmp_path):
    address = endpoint()
    broken = python_app(tmp_path, "import no_such_module\n", name="broken.py")
    daemon.create("broken", manifest(broken, {"echo": {"type": "zeromq-server", "endpoint": address}}))
    reply = daemon.client(address).call(b"x")
    assert reply[:2] == [b"error", b"503"]
    assert b"No module named 'no_such_module'" in reply[2]
    # The daemon and its other apps are unaffected.
    assert "node" in daemon.info()


def test_many_clients_every_request_gets_one_answer(daemon, tmp_path):
    address = server(daemon, tmp_path, "echo", pool_limit=2, queue_limit=1000)
    bodies = [str(i).encode() for i in range(500)]
    replies = send_all(daemon, address, bodies)
    assert sorted(r[1] for r in replies) == sorted(bodies)
    assert all(r[0] == b"ok" for r in replies)
    stats = daemon.info("app")["tasks"]["echo"]["stats"]
    assert stats["accepted"] == stats["succeeded"] == 500


def test_deleting_a_busy_app_answers_its_requests(daemon, tmp_path):
    # The test daemon's --stop-timeout is 5 s: jobs still running or queued then get an error.
    address = server(daemon, tmp_path, "slow", pool_limit=1, concurrency=1)
    sock = dealer(daemon.context, address)
    try:
        for _ in range(3):
            sock.send_multipart([b"", b"30"])
        wait_for(lambda: daemon.info("app")["jobs"]["running"] == 1, message="a job to run")
        assert daemon.request({"version": 2, "action": "delete", "apps": ["app"]})["app"] == {"deleted": True}
        replies = sorted(sock.recv_multipart()[1:] for _ in range(3))
    finally:
        sock.close(0)
    assert replies == [[b"error", b"503", b"app 'app' stopped before the job finished"],
                       [b"error", b"503", b"app 'app' stopped before the job ran"],
                       [b"error", b"503", b"app 'app' stopped before the job ran"]]


def test_timer_results_are_published(daemon, tmp_path, zmq_context):
    pubsub = endpoint()
    app = python_app(tmp_path, "def tick(request):\n    return 'tick %d' % request.meta['tick']\n"
                               "def boom(request):\n    raise RuntimeError('nope')\n")
    sub = zmq_context.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = 10_000
    sub.subscribe(b"tick ")  # the tasks' results only, not the engine's events, stats and logs
    sub.subscribe(b"boom ")
    sub.connect(pubsub)
    daemon.create("timers", dict(manifest(app, {"tick": {"type": "recurring-timer", "interval": 100},
                                                "boom": {"type": "recurring-timer", "interval": 100}}),
                                 pubsub={"endpoint": pubsub}))
    seen = {}
    while len(seen) < 2:
        topic, meta, *payload = sub.recv_multipart()
        seen[topic] = (json.loads(meta), payload)
    meta, payload = seen[b"tick result"]
    assert meta["app"] == "timers" and meta["task"] == "tick" and "timestamp" in meta
    assert payload[0].startswith(b"tick ")
    meta, payload = seen[b"boom error"]
    assert json.loads(payload[0]) == {"code": 502, "message": "RuntimeError: nope"}
    sub.close(0)
