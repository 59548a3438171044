"""The Python fork server: workers forked from a process that imported the app once, which keep
everything a worker started by exec has (the daemon as parent, exit status, output, memory figures,
dying with the daemon), and the server's own faults."""

import os
import signal

from cocaine.core.backends.process import MAX_SPARES
from support import Subscriber, alive, dealer, endpoint, manifest, python_app, wait_for

APP = '''
import logging, os, sys, time
print("imported once")
print("import warning", file=sys.stderr)
logging.getLogger("myapp").info("import logged")
DATA = bytes(8 << 20)  # shared copy-on-write by every forked worker

def pid(request):
    return str(os.getpid())

def ppid(request):
    return str(os.getppid())

def chatty(request):
    print("from", os.getpid())
    return b"ok"

def exit3(request):
    raise SystemExit(3)

def sleep(request):
    time.sleep(float(request.body))
    return b"slept"

def hold(request):  # until the file named by the body exists
    while not os.path.exists(request.body.decode()):
        time.sleep(0.01)
    return b"released"

def hang(request):
    while True:
        pass

VERSION = b"v1"

def version(request):
    return VERSION
'''

TASKS = ["pid", "ppid", "chatty", "exit3", "sleep", "hang", "version", "hold"]


def create(daemon, tmp_path, source=APP, pubsub=None, subscriber=None, **engine):
    app = python_app(tmp_path, source)
    addresses = {task: endpoint() for task in TASKS}
    m = manifest(app, {t: {"type": "zeromq-server", "endpoint": a} for t, a in addresses.items()}, **engine)
    if pubsub:
        # Frequent @stats let the test prove its subscription live before any worker logs (slow joiner).
        m["pubsub"] = {"endpoint": pubsub, "stats-interval": 0.1}
    daemon.create("app", m)
    if subscriber:
        subscriber.sock.subscribe(b"@stats")
        subscriber.wait("@stats")
        subscriber.sock.unsubscribe(b"@stats")
    return addresses, m


def fork_server(daemon, state="ready"):
    """The app's fork server once it is in ``state``."""
    return wait_for(lambda: (lambda fs: fs if fs and fs["state"] == state else None)(
        daemon.info("app")["pool"]["fork-server"]), timeout=20, message=f"the fork server to be {state}")


def worker_pids(daemon):
    return {w["pid"] for w in daemon.info("app")["pool"]["workers"]}


def two_forked_workers(daemon, context, addresses):
    """Grow a ready app (pool-limit 2, concurrency 1) to two workers with two sleeping jobs."""
    sock = dealer(context, addresses["sleep"])
    for _ in range(2):
        sock.send_multipart([b"", b"0.5"])
    assert [sock.recv_multipart()[1:] for _ in range(2)] == [[b"ok", b"slept"]] * 2
    sock.close(0)
    assert len(worker_pids(daemon)) == 2 and daemon.info("app")["pool"]["fork-server"]["forked"] == 2


def test_forked_workers_are_the_daemons_children_with_their_own_output_and_memory(daemon, tmp_path, zmq_context):
    pubsub = endpoint()
    sub = Subscriber(daemon.context, pubsub, "@log", "@worker")
    addresses, _ = create(daemon, tmp_path, pubsub=pubsub, subscriber=sub, pool_limit=2, concurrency=1)
    server = fork_server(daemon)
    two_forked_workers(daemon, zmq_context, addresses)
    # pyzmq is loaded in the server (its workers import nothing), but no ZeroMQ context ever ran
    # there: a context's sockets start libzmq's threads, and the server has only its main thread.
    with open(f"/proc/{server['pid']}/maps") as f:
        assert "libzmq" in f.read()
    assert os.listdir(f"/proc/{server['pid']}/task") == [str(server["pid"])]
    info = daemon.info("app")["pool"]
    pids = {w["pid"] for w in info["workers"]}
    assert set(daemon.workers()) == pids and daemon.fork_servers() == [server["pid"]]
    # pool-limit 2: two spares, forked again once the two workers took the first ones.
    spares = wait_for(lambda: (lambda s: s if len(s) == 2 and sorted(daemon.spares()) == s else None)(
        daemon.info("app")["pool"]["fork-server"]["spares"]), message="two spares, named as such")
    assert not pids & set(spares)
    # Each worker's own figures: the 8 MiB the import made count in full in its RSS, shared in its PSS.
    assert all(w["memory-rss"] > 8 << 20 and w["memory-pss"] < w["memory-rss"] for w in info["workers"])
    assert info["memory-pss"] == sum(w["memory-pss"] for w in info["workers"])
    assert info["fork-server"]["memory-rss"] > 8 << 20
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == daemon.proc.pid
    assert daemon.client(addresses["ppid"]).call(b"")[1] == str(daemon.proc.pid).encode()
    # What the import printed and logged reaches the log of every worker, as if each had imported it.
    for pid_ in pids:
        worker = next(w["id"] for w in info["workers"] if w["pid"] == pid_)
        sub.wait("@log info", lambda e, w=worker: e["worker"] == w and e["message"] == "imported once")
        sub.wait("@log warning", lambda e, w=worker: e["worker"] == w and e["message"] == "import warning")
        sub.wait("@log info", lambda e, w=worker: e["worker"] == w and e["message"] == "myapp: import logged")
    # Each worker's output goes through its own pipes.
    client = daemon.client(addresses["chatty"])
    for _ in range(6):
        client.call(b"")
    _, out, _ = sub.wait("@log info", lambda e: e["message"].startswith("from "))
    assert out["message"] == f"from {next(w['pid'] for w in info['workers'] if w['id'] == out['worker'])}"
    sub.close()


def test_exit_status_signal_and_heartbeat_kills_are_reported_as_for_any_worker(daemon, tmp_path):
    pubsub = endpoint()
    sub = Subscriber(daemon.context, pubsub, "@worker exited")
    addresses, _ = create(daemon, tmp_path, pubsub=pubsub, subscriber=sub, pool_limit=1, heartbeat_timeout=1)
    fork_server(daemon)
    assert daemon.client(addresses["exit3"]).call(b"") == [b"error", b"500", b"worker exited with status 3"]
    _, exited, _ = sub.wait("@worker exited")
    assert (exited["status"], exited["signal"], exited["reason"]) == (3, None, "crash")
    pid = int(daemon.client(addresses["pid"]).call(b"")[1])
    assert daemon.info("app")["pool"]["fork-server"]["forked"] == 2  # both forked, none exec'd
    os.kill(pid, signal.SIGKILL)
    _, exited, _ = sub.wait("@worker exited", lambda e: e["pid"] == pid)
    assert (exited["status"], exited["signal"]) == (None, "SIGKILL")
    reply = daemon.client(addresses["hang"], timeout=20).call(b"")
    assert reply[:2] == [b"error", b"504"] and b"heartbeat-timeout (1 s)" in reply[2]
    _, exited, _ = sub.wait("@worker exited", lambda e: e["reason"] == "heartbeat-timeout")
    assert exited["signal"] == "SIGKILL" and not alive(exited["pid"])
    sub.close()


def test_a_killed_fork_server_takes_no_worker_with_it_and_is_started_again(daemon, tmp_path, zmq_context):
    addresses, _ = create(daemon, tmp_path, pool_limit=2, concurrency=1)
    server = fork_server(daemon)
    client = daemon.client(addresses["pid"])
    first = int(client.call(b"")[1])
    assert daemon.info("app")["pool"]["fork-server"]["forked"] == 1
    os.kill(server["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(server["pid"]), message="the fork server to die")
    assert int(client.call(b"")[1]) == first  # the worker lives on
    # While the first worker is held, a second one starts (by exec: there is no server) and a new
    # server starts; it forks the workers after that. Held until the end, however long the start.
    release = tmp_path / "release"
    holder = dealer(zmq_context, addresses["hold"], 30_000)
    holder.send_multipart([b"", str(release).encode()])
    wait_for(lambda: daemon.info("app")["jobs"]["running"] == 1, message="the held job")
    second = int(client.call(b"")[1])
    assert second != first and worker_pids(daemon) == {first, second}
    restarted = fork_server(daemon)
    assert restarted["pid"] != server["pid"] and restarted["starts"] == 2
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: second not in worker_pids(daemon), message="the second worker to go")
    third = int(client.call(b"")[1])
    assert third != second and daemon.info("app")["pool"]["fork-server"]["forked"] == 2
    release.touch()
    assert holder.recv_multipart()[1:] == [b"ok", b"released"] and int(client.call(b"")[1]) in {first, third}
    holder.close(0)


def spares_ready(daemon, count):
    """The server's ``count`` spares, once it has them all (and each names itself a spare)."""
    return wait_for(lambda: (lambda s: s if len(s) == count and sorted(daemon.spares()) == s else None)(
        daemon.info("app")["pool"]["fork-server"]["spares"]), timeout=20, message=f"{count} spares")


def test_a_burst_takes_every_spare_and_the_server_forks_new_ones(daemon, tmp_path, zmq_context):
    limit = MAX_SPARES + 1  # one worker more than there are spares: it is forked on demand
    addresses, _ = create(daemon, tmp_path, pool_limit=limit, concurrency=1)
    fork_server(daemon)
    spares = spares_ready(daemon, MAX_SPARES)
    sock = dealer(zmq_context, addresses["sleep"])
    for _ in range(limit):  # each job needs a worker of its own: the pool asks for all of them at once
        sock.send_multipart([b"", b"0.5"])
    assert [sock.recv_multipart()[1:] for _ in range(limit)] == [[b"ok", b"slept"]] * limit
    sock.close(0)
    info = daemon.info("app")["pool"]
    pids = {w["pid"] for w in info["workers"]}
    assert len(pids) == limit and set(spares) < pids and info["fork-server"]["forked"] == limit
    for pid in pids:  # the daemon's children all, whether forked ahead or on demand
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == daemon.proc.pid
    assert not set(spares_ready(daemon, MAX_SPARES)) & pids  # new spares, forked once the burst was served


def test_the_engine_never_waits_for_the_fork_server(daemon, tmp_path, zmq_context):
    addresses, _ = create(daemon, tmp_path, pool_limit=2, concurrency=1)
    server = fork_server(daemon)
    first = int(daemon.client(addresses["pid"]).call(b"")[1])
    sock = dealer(zmq_context, addresses["sleep"])
    os.kill(server["pid"], signal.SIGSTOP)
    try:
        sock.send_multipart([b"", b"0.3"])  # the first worker's
        wait_for(lambda: daemon.info("app")["jobs"]["running"] == 1, message="the first job running")
        sock.send_multipart([b"", b"0.3"])  # queued: a second worker is asked of the stopped server
        starting = wait_for(lambda: [w for w in daemon.info("app")["pool"]["workers"] if w["pid"] != first],
                            message="the second worker asked for")
        assert starting[0]["pid"] is None and starting[0]["state"] == "starting"
        # The first job is answered while the server still cannot answer: nothing waited for it.
        assert sock.recv_multipart()[1:] == [b"ok", b"slept"]
        with open(f"/proc/{server['pid']}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "T"  # stopped, and neither killed nor replaced
        assert daemon.info("app")["pool"]["fork-server"]["pid"] == server["pid"]
    finally:
        os.kill(server["pid"], signal.SIGCONT)
    assert sock.recv_multipart()[1:] == [b"ok", b"slept"]
    sock.close(0)
    # Once the server answers, the second worker is known by its pid, forked and ready.
    second = wait_for(lambda: [w for w in daemon.info("app")["pool"]["workers"]
                               if w["pid"] not in (None, first) and w["state"] != "starting"], message="the second worker")
    assert second[0]["pid"] in daemon.workers() and daemon.info("app")["pool"]["fork-server"]["forked"] == 2


def test_a_worker_its_dying_server_never_forked_is_started_by_exec_instead(daemon, tmp_path):
    addresses, _ = create(daemon, tmp_path, pool_limit=1)
    server = fork_server(daemon)
    os.kill(server["pid"], signal.SIGSTOP)
    client = daemon.client(addresses["pid"], timeout=20)
    client.sock.send_multipart([b""])
    wait_for(lambda: [w for w in daemon.info("app")["pool"]["workers"] if w["pid"] is None],
             message="a worker asked of the stopped server")
    os.kill(server["pid"], signal.SIGKILL)  # it dies without answering
    reply = client.sock.recv_multipart()
    assert reply[0] == b"ok"  # no failed start, no error: the job ran on a worker started by exec
    info = daemon.info("app")
    assert info["state"] == "running" and info["pool"]["fork-server"]["forked"] == 0
    assert [w["pid"] for w in info["pool"]["workers"]] == [int(reply[1])]
    assert "could not be forked: the fork server exited before it answered; starting another" in daemon.log()
    assert fork_server(daemon)["starts"] == 2  # and a new server is started for the next workers


def test_an_import_error_is_reported_as_ever_and_reload_brings_a_new_server(daemon, tmp_path):
    app = python_app(tmp_path, "import missing_module\n")
    address = endpoint()
    daemon.create("app", manifest(app, {"pid": {"type": "zeromq-server", "endpoint": address}}))
    broken = fork_server(daemon, state="stopped")
    assert broken["reason"] == "exited with status 3 before it was ready"
    client = daemon.client(address)
    reply = client.call(b"x")
    assert reply[:2] == [b"error", b"503"] and b"No module named 'missing_module'" in reply[2]
    assert b"cannot load " in reply[2]
    info = daemon.info("app")
    assert info["state"] == "broken" and "missing_module" in info["broken-reason"]

    (tmp_path / "app.py").write_text("import os\ndef pid(request):\n    return str(os.getpid())\n")
    daemon.request({"version": 2, "action": "reload", "apps": ["app"]})
    server = fork_server(daemon)
    wait_for(lambda: client.call(b"")[0] == b"ok", timeout=20, interval=0.2, message="the app to recover")
    assert daemon.info("app")["state"] == "running"
    assert server["pid"] in daemon.fork_servers()


def test_reload_with_new_code_replaces_the_fork_server(daemon, tmp_path):
    addresses, _ = create(daemon, tmp_path, pool_limit=1)
    old = fork_server(daemon)
    client = daemon.client(addresses["version"])
    assert client.call(b"") == [b"ok", b"v1"]
    (tmp_path / "app.py").write_text(APP.replace('VERSION = b"v1"', 'VERSION = b"v2"'))
    reply = daemon.request({"version": 2, "action": "reload", "apps": ["app"]})
    assert reply["app"]["pool"]["generation"] == 2
    new = fork_server(daemon)
    assert new["pid"] != old["pid"]
    wait_for(lambda: not alive(old["pid"]), message="the old fork server to exit")
    assert client.call(b"") == [b"ok", b"v2"]
    assert daemon.info("app")["pool"]["fork-server"]["forked"] == 1


def test_nothing_outlives_a_killed_daemon(make_daemon, tmp_path, zmq_context):
    daemon = make_daemon().start()
    addresses, _ = create(daemon, tmp_path, pool_limit=2, concurrency=1)
    server = fork_server(daemon)
    two_forked_workers(daemon, zmq_context, addresses)
    wait_for(lambda: len(daemon.spares()) == 2, message="the two spares")
    processes = daemon.workers() + daemon.fork_servers() + daemon.spares()
    assert server["pid"] in processes and len(processes) == 5
    daemon.proc.kill()
    daemon.proc.wait(10)
    for pid in processes:
        wait_for(lambda: not alive(pid), timeout=10, message=f"process {pid} to exit with the daemon")


def test_an_app_that_starts_threads_at_import_is_not_forked(daemon, tmp_path):
    source = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n" + APP
    addresses, _ = create(daemon, tmp_path, source=source, pool_limit=1)
    server = fork_server(daemon, state="unforkable")
    assert "started 1 thread(s)" in server["reason"]
    assert daemon.client(addresses["version"]).call(b"") == [b"ok", b"v1"]  # started by exec
    assert daemon.fork_servers() == []


def test_fork_server_can_be_switched_off(daemon, tmp_path):
    addresses, _ = create(daemon, tmp_path, pool_limit=1, fork_server=False)
    assert daemon.client(addresses["version"]).call(b"") == [b"ok", b"v1"]
    assert daemon.info("app")["pool"]["fork-server"] is None and daemon.fork_servers() == []
    reply = daemon.request({"version": 2, "action": "create", "apps": {"bad": manifest(
        str(tmp_path / "app.py"), {"pid": {"type": "zeromq-server", "endpoint": endpoint()}}, fork_server="yes")}})
    assert reply["bad"]["error"] == "app 'bad': engine.fork-server: expected true or false, got 'yes'"
