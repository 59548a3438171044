"""Monitoring end to end: what an app's pubsub endpoint publishes when things happen (docs/pubsub.md),
the daemon's log, and the Prometheus endpoint."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
import zmq

from support import Subscriber, endpoint, free_port, manifest, python_app, wait_for

APP = '''
import logging, os, sys, threading

log = logging.getLogger("myapp")

def echo(request):
    return request.body

def chatty(request):
    print("to stdout " + request.text())
    print("to stderr " + request.text(), file=sys.stderr)
    log.info("logged %s", request.text())
    return b"ok"

def fails(request):
    raise ValueError("bad input: " + request.text())

def crash(request):
    os._exit(7)

def pid(request):
    return str(os.getpid())

def hang(request):
    while True:
        pass
'''

COMMON = ("node", "app", "timestamp")


def start(daemon, tmp_path, tasks, name="mon", source=APP, stats_interval=0.2, **engine):
    """Create an app whose tasks are zeromq-servers; return (task addresses, subscriber, manifest).
    The subscriber is connected before the app starts, and the first @stats message proves it
    receives (ZeroMQ's slow joiner would otherwise lose what is published first)."""
    pubsub = endpoint()
    sub = Subscriber(daemon.context, pubsub)
    addresses = {task: endpoint() for task in tasks}
    m = manifest(python_app(tmp_path, source, f"{name}.py"),
                 {t: {"type": "zeromq-server", "endpoint": a} for t, a in addresses.items()}, **engine)
    m["pubsub"] = {"endpoint": pubsub, "stats-interval": stats_interval}
    daemon.create(name, m)
    if stats_interval:
        sub.wait("@stats")
    return addresses, sub, m


def send(daemon, address, body=b"x"):
    """Send a request without waiting for its answer (for jobs that never answer well)."""
    sock = daemon.context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    sock.send_multipart([b"", body])
    return sock


def assert_common(meta, app="mon"):
    assert meta["app"] == app and isinstance(meta["node"], str) and isinstance(meta["timestamp"], float), meta


def test_stats_worker_events_and_logs(daemon, tmp_path):
    addresses, sub, m = start(daemon, tmp_path, ["echo", "chatty", "fails", "crash", "pid"], pool_limit=1)
    call = lambda task, body=b"x": daemon.client(addresses[task]).call(body)  # noqa: E731

    # A worker starts for the first request.
    assert call("echo", b"hi") == [b"ok", b"hi"]
    _, spawned, _ = sub.wait("@worker spawned")
    assert_common(spawned)
    worker = spawned["worker"]
    assert worker.startswith("mon.") and spawned["generation"] == 1 and spawned["backend"] == "process"
    assert int(call("pid")[1]) == spawned["pid"]
    _, ready, _ = sub.wait("@worker ready")
    assert ready["worker"] == worker and ready["startup-ms"] > 0

    # Statistics: the pool now, and the interval's figures per task.
    _, stats, payload = sub.wait("@stats", lambda s: s["tasks"]["echo"]["totals"]["succeeded"] == 1)
    assert_common(stats)
    assert payload == [] and stats["interval"] > 0 and stats["state"] == "running"
    assert stats["pool"]["total"] == 1 and stats["pool"]["limit"] == 1 and stats["pool"]["memory-rss"] > 1 << 20
    assert set(stats["pool"]) >= {"busy", "idle", "starting"}
    assert stats["queue"] == {"depth": 0, "peak": stats["queue"]["peak"], "limit": 100}
    echo = stats["tasks"]["echo"]
    assert set(echo) == {"accepted", "succeeded", "failed", "rejected", "failed-by-code", "throughput",
                         "latency-ms", "totals"}
    assert set(echo["latency-ms"]) == {"p50", "p90", "p99"}

    # The app's output and log lines, each attributed to its worker.
    assert call("chatty", b"one") == [b"ok", b"ok"]
    _, out, _ = sub.wait("@log info", lambda e: e["stream"] == "stdout")
    assert_common(out)
    assert out == {**out, "worker": worker, "level": "info", "message": "to stdout one"}
    _, err, _ = sub.wait("@log warning", lambda e: e["stream"] == "stderr")
    assert err["message"] == "to stderr one" and err["worker"] == worker
    _, logged, _ = sub.wait("@log info", lambda e: e["stream"] == "log")
    assert logged["message"] == "myapp: logged one" and logged["worker"] == worker

    # A handler's exception: one error line with the traceback of the app's code.
    assert call("fails", b"two") == [b"error", b"502", b"ValueError: bad input: two"]
    _, error, _ = sub.wait("@log error")
    first, *traceback = error["message"].split("\n")
    assert first.startswith("task 'fails' job ") and first.endswith(" failed: ValueError: bad input: two")
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "ValueError: bad input: two"
    assert "cocaine/python/worker.py" not in error["message"]
    # ... which the daemon's log shows once, every line attributed.
    wait_for(lambda: "ValueError: bad input: two" in daemon.log(), message="the traceback in the daemon's log")
    lines = [line for line in daemon.log().splitlines() if "Traceback (most recent call last)" in line]
    assert len(lines) == 1 and f"ERROR   app=mon worker={worker} | Traceback" in lines[0], lines

    # A crash: the exit status and the reason.
    assert call("crash")[:2] == [b"error", b"500"]
    _, exited, _ = sub.wait("@worker exited")
    assert_common(exited)
    assert (exited["worker"], exited["reason"], exited["status"], exited["signal"]) == (worker, "crash", 7, None)
    assert exited["description"] == "worker exited with status 7" and exited["uptime"] > 0

    # A reload: the engine's event, then the old generation leaves for that reason.
    call("echo")
    _, spawned, _ = sub.wait("@worker spawned")
    assert daemon.request({"version": 2, "action": "reload", "apps": ["mon"]})["mon"]["pool"]["generation"] == 2
    _, reloaded, _ = sub.wait("@engine reloaded")
    assert reloaded["generation"] == 2
    _, exited, _ = sub.wait("@worker exited")
    assert (exited["worker"], exited["reason"], exited["status"]) == (spawned["worker"], "reload", 0)

    # Killed by a signal.
    pid = int(call("pid")[1])
    os.kill(pid, signal.SIGKILL)
    _, exited, _ = sub.wait("@worker exited", lambda e: e["pid"] == pid)
    assert (exited["reason"], exited["status"], exited["signal"], exited["generation"]) == ("crash", None, "SIGKILL", 2)
    sub.close()


def test_exit_reasons_idle_heartbeat_timeout_and_startup_failure(daemon, tmp_path):
    addresses, sub, _ = start(daemon, tmp_path, ["echo", "hang"], idle_timeout=0.3, heartbeat_timeout=1)
    assert daemon.client(addresses["echo"]).call(b"x") == [b"ok", b"x"]
    _, exited, _ = sub.wait("@worker exited")
    assert exited["reason"] == "idle" and exited["status"] == 0

    hung = send(daemon, addresses["hang"])
    _, exited, _ = sub.wait("@worker exited")
    assert (exited["reason"], exited["signal"]) == ("heartbeat-timeout", "SIGKILL")
    assert hung.poll(5000) and hung.recv_multipart()[1:3] == [b"error", b"504"]
    hung.close(0)

    addresses, broken_sub, _ = start(daemon, tmp_path, ["echo"], name="broken", source="raise ImportError('nope')\n")
    assert daemon.client(addresses["echo"]).call(b"x")[:2] == [b"error", b"503"]
    _, log, _ = broken_sub.wait("@log error")
    assert log["message"].startswith("cannot load ") and log["message"].split("\n")[0].endswith("ImportError: nope")
    _, exited, _ = broken_sub.wait("@worker exited")
    assert (exited["app"], exited["reason"], exited["status"]) == ("broken", "startup-failure", 3)
    _, event, _ = broken_sub.wait("@engine broken")
    assert event["reason"].endswith("cannot load " + str(tmp_path / "broken.py") + ": ImportError: nope")
    sub.close()
    broken_sub.close()


def test_thread_workers_logs_arrive_once(daemon, tmp_path):
    source = APP + '''
def logs(request):
    logging.getLogger("threaded").warning("from a thread worker")
    return b"ok"
'''
    addresses, sub, _ = start(daemon, tmp_path, ["fails", "logs"], source=source, backend="thread")
    assert daemon.client(addresses["logs"]).call(b"x") == [b"ok", b"ok"]
    _, spawned, _ = sub.wait("@worker spawned")
    assert spawned["pid"] is None and spawned["backend"] == "thread"
    _, logged, _ = sub.wait("@log warning")
    assert (logged["message"], logged["worker"], logged["stream"]) == (
        "threaded: from a thread worker", spawned["worker"], "log")
    assert daemon.client(addresses["fails"]).call(b"z")[:2] == [b"error", b"502"]
    _, error, _ = sub.wait("@log error")
    assert "ValueError: bad input: z" in error["message"] and error["worker"] == spawned["worker"]
    wait_for(lambda: "bad input: z" in daemon.log(), message="the traceback in the daemon's log")
    log = daemon.log()
    assert log.count("from a thread worker") == 1 and log.count("Traceback (most recent call last)") == 1, log
    sub.close()


@pytest.mark.parametrize("value", [-1, 0.01, "5", True, None])
def test_stats_interval_is_validated(daemon, tmp_path, value):
    m = manifest(python_app(tmp_path, APP), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    m["pubsub"] = {"endpoint": endpoint(), "stats-interval": value}
    reply = daemon.request({"version": 2, "action": "create", "apps": {"bad": m}})
    assert reply["bad"]["error"] == ("app 'bad': pubsub.stats-interval: expected 0 (no statistics) or a number "
                                     f"of seconds >= 0.1, got {value!r}")


def test_info_shows_worker_memory(daemon, tmp_path):
    addresses, sub, _ = start(daemon, tmp_path, ["pid"], stats_interval=0)
    pid = int(daemon.client(addresses["pid"]).call(b"")[1])
    info = daemon.info("mon")
    assert info["stats-interval"] == 0
    [worker] = info["pool"]["workers"]
    assert worker["pid"] == pid and worker["state"] == "idle" and worker["memory-rss"] > 1 << 20
    assert info["pool"]["memory-rss"] == worker["memory-rss"]
    sub.close()


def scrape(port: int) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_prometheus_metrics_move_with_traffic(make_daemon, tmp_path):
    port = free_port()
    daemon = make_daemon("--metrics", f"127.0.0.1:{port}").start()
    address = endpoint()
    tasks = {"echo": {"type": "zeromq-server", "endpoint": address},
             "fails": {"type": "zeromq-server", "endpoint": endpoint()}}
    daemon.create("web", manifest(python_app(tmp_path, APP), tasks, pool_limit=3))
    before = scrape(port)
    assert before[("cocaine_app_up", (("app", "web"),))] == 1
    assert before[("cocaine_jobs_total", (("app", "web"), ("outcome", "succeeded"), ("task", "echo")))] == 0
    assert before[("cocaine_workers_limit", (("app", "web"),))] == 3
    assert ("process_resident_memory_bytes", ()) in before

    client = daemon.client(address)
    for _ in range(5):
        assert client.call(b"x") == [b"ok", b"x"]
    assert daemon.client(daemon.info("web")["tasks"]["fails"]["endpoint"]).call(b"y")[:2] == [b"error", b"502"]

    after = scrape(port)
    app = (("app", "web"),)
    echo = (("app", "web"), ("task", "echo"))
    assert after[("cocaine_jobs_accepted_total", echo)] == 5
    assert after[("cocaine_jobs_total", (("app", "web"), ("outcome", "succeeded"), ("task", "echo")))] == 5
    assert after[("cocaine_jobs_failed_total", (("app", "web"), ("code", "502"), ("task", "fails")))] == 1
    assert after[("cocaine_job_latency_seconds_count", echo)] == 5
    assert after[("cocaine_job_latency_seconds_sum", echo)] > 0
    assert after[("cocaine_job_latency_seconds", (("app", "web"), ("quantile", "0.99"), ("task", "echo")))] > 0
    assert after[("cocaine_workers_spawned_total", app)] >= 1
    workers = sum(after[("cocaine_workers", (("app", "web"), ("state", s)))] for s in ("busy", "idle", "starting"))
    assert workers >= 1 and after[("cocaine_workers_memory_rss_bytes", app)] > 1 << 20
    assert after[("cocaine_queue_depth", app)] == 0 and after[("cocaine_queue_limit", app)] == 100


def test_metrics_address_is_validated(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location",
                             str(tmp_path / "storage"), "--runtime-dir", str(tmp_path / "run"), "--management",
                             endpoint(), "--metrics", "nowhere"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--metrics: expected HOST:PORT such as 127.0.0.1:9300, got 'nowhere'" in result.stderr


def test_json_log_format(make_daemon, tmp_path):
    daemon = make_daemon("--log-format", "json").start()
    address = endpoint()
    daemon.create("js", manifest(python_app(tmp_path, APP), {"fails": {"type": "zeromq-server", "endpoint": address}}))
    assert daemon.client(address).call(b"q")[:2] == [b"error", b"502"]
    wait_for(lambda: "bad input: q" in daemon.log(), message="the app's error in the log")
    entries = [json.loads(line) for line in daemon.log().splitlines()]
    assert all(set(e) >= {"timestamp", "level", "app", "worker", "logger", "message"} for e in entries)
    [error] = [e for e in entries if "bad input: q" in e["message"]]
    assert error["level"] == "error" and error["app"] == "js" and error["worker"].startswith("js.")
    assert error["stream"] == "log" and "Traceback (most recent call last):" in error["message"]
    assert any(e["app"] == "js" and e["message"] == "created" for e in entries)


def test_info_stats_and_metrics_count_a_starting_worker_alike(make_daemon, tmp_path):
    """busy + idle + starting == total in all three, and a worker that has not said hello is starting."""
    port = free_port()
    daemon = make_daemon("--metrics", f"127.0.0.1:{port}").start()
    gate = tmp_path / "gate"
    source = f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.01)\n" + APP
    addresses, sub, m = start(daemon, tmp_path, ["echo"], name="slow", source=source, stats_interval=0.2,
                              pool_min=1)

    def figures(expected):
        busy, idle, starting = expected
        info = daemon.info("slow")["pool"]
        assert (info["busy"], info["idle"], info["starting"], info["total"]) == (busy, idle, starting, 1)
        assert [w["state"] for w in info["workers"]] == ["starting" if starting else "idle"]
        _, stats, _ = sub.wait("@stats", lambda meta: meta["pool"]["starting"] == starting)
        assert (stats["pool"]["busy"], stats["pool"]["idle"], stats["pool"]["total"]) == (busy, idle, 1)
        metrics = scrape(port)
        assert [metrics[("cocaine_workers", (("app", "slow"), ("state", s)))] for s in ("busy", "idle", "starting")] \
            == [busy, idle, starting]

    wait_for(lambda: daemon.info("slow")["pool"]["total"] == 1)
    figures((0, 0, 1))
    gate.touch()
    wait_for(lambda: daemon.info("slow")["pool"]["starting"] == 0)
    figures((0, 1, 0))
    sub.close()
