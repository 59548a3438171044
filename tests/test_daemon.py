"""cocained itself: loading apps from storage at start, signals, no orphan workers."""

import json
import os
import signal

from support import alive, endpoint, manifest, python_app, wait_for

ECHO = "def echo(request):\n    return request.body\n"


def store(daemon, name, document):
    apps = daemon.storage / "default" / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    (apps / name).write_text(document if isinstance(document, str) else json.dumps(document))


def serve_echo(daemon, tmp_path) -> str:
    """Create the app echo, answer one request through it (so a worker runs); return its endpoint."""
    address = endpoint()
    daemon.create("echo", manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": address}}))
    assert daemon.client(address).call(b"x") == [b"ok", b"x"]
    return address


def test_apps_in_storage_start_with_the_daemon_and_a_corrupt_one_is_skipped(make_daemon, tmp_path):
    daemon = make_daemon()
    good = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    store(daemon, "good", good)
    store(daemon, "corrupt", "{not json")
    store(daemon, "invalid", dict(good, type="cobol"))
    daemon.start()
    apps = daemon.info()["apps"]
    assert apps["good"]["running"] is True
    assert apps["corrupt"]["state"] == "failed" and "is not valid JSON" in apps["corrupt"]["error"]
    assert "type: unknown language 'cobol' (known: cpp, js, perl, python)" in apps["invalid"]["error"]
    assert daemon.client(good["tasks"]["echo"]["endpoint"]).call(b"hi") == [b"ok", b"hi"]
    assert "corrupt" in daemon.log() and "not started" in daemon.log()


def test_sigterm_stops_every_worker_and_exits_zero(make_daemon, tmp_path):
    daemon = make_daemon().start()
    serve_echo(daemon, tmp_path)
    # A fork server names itself once its interpreter is up: until then it looks like a second worker.
    wait_for(lambda: len(daemon.workers()) == 1, message="one worker process")
    assert daemon.stop() == 0  # also waits for every worker to be gone


def test_sigint_stops_cleanly_too(make_daemon):
    daemon = make_daemon().start()
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(20) == 0


def test_workers_exit_when_the_daemon_is_killed(make_daemon, tmp_path):
    daemon = make_daemon().start()
    serve_echo(daemon, tmp_path)
    workers = daemon.workers()
    assert workers
    daemon.proc.kill()
    daemon.proc.wait(10)
    for pid in workers:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10,
                 message=f"orphan worker {pid} to exit")


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sighup_makes_the_node_match_storage(make_daemon, tmp_path):
    daemon = make_daemon().start()
    first = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    daemon.create("first", first)
    second = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    apps = daemon.storage / "default" / "apps"
    (apps / "first").unlink()
    (apps / "second").write_text(json.dumps(second))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: set(daemon.info()["apps"]) == {"second"}, message="SIGHUP to load second, drop first")
    assert daemon.client(second["tasks"]["echo"]["endpoint"]).call(b"2") == [b"ok", b"2"]


def test_instance_and_several_management_endpoints(make_daemon):
    extra = endpoint()
    daemon = make_daemon("--instance", "blue", "--management", extra).start()
    # Both endpoints serve: the fixture's own, and the extra one.
    assert daemon.info()["node"]["instance"] == "blue"
    assert daemon.client(extra).call_json({"version": 2, "action": "info"})["node"]["instance"] == "blue"


def test_the_daemon_freezes_its_start_up_objects_out_of_the_cyclic_collector(daemon):
    # Tens of thousands of module objects: a full collection that walked them would pause every
    # reactor for tens of milliseconds (docs/benchmarks.md, "HTTP").
    gc = daemon.info()["node"]["gc"]
    assert gc["frozen"] > 10_000, gc
    assert len(gc["collections"]) == len(gc["collected"]) == 3, gc


def test_a_taken_management_endpoint_is_a_clear_error(tmp_path, zmq_context):
    import subprocess
    import sys

    import zmq

    taken = zmq_context.socket(zmq.ROUTER)
    address = endpoint()
    taken.bind(address)
    try:
        result = subprocess.run([sys.executable, "-m", "cocaine.core.daemon.main", "--management", address,
                                 "--storage-location", str(tmp_path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert f"--management {address}: cannot bind: Address already in use" in result.stderr
    finally:
        taken.close(0)


def test_sighup_logs_an_app_that_cannot_be_reloaded_and_keeps_it_running(make_daemon, tmp_path):
    daemon = make_daemon().start()
    app = python_app(tmp_path, ECHO)
    m = manifest(app, {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    daemon.create("echo", m)
    os.unlink(app)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "app=echo not reloaded" in daemon.log(), message="the reload failure to be logged")
    assert "(no such file)" in daemon.log()
    assert daemon.info("echo")["running"] is True


def test_reload_of_an_unknown_app(daemon):
    reply = daemon.request({"version": 2, "action": "reload", "apps": ["ghost"]})
    assert reply == {"ghost": {"error": "no app named 'ghost'"}}


def test_a_second_daemon_on_the_same_instance_refuses_to_start_naming_the_first(make_daemon, tmp_path):
    import subprocess
    import sys

    first = make_daemon().start()
    echo = serve_echo(first, tmp_path)
    second = subprocess.run(
        [sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", str(first.storage),
         "--runtime-dir", str(tmp_path / "second-run"), "--management", endpoint()],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert second.returncode == 2
    lock = first.storage / "default" / "cocained.lock"
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"ERROR   instance 'default' in {first.storage} is already served by pid {first.proc.pid} (it holds "
        f"{lock}): stop that daemon first, or give this one another --instance or --storage-location"), lines
    assert lock.read_text() == f"{first.proc.pid}\n"
    # The first daemon keeps serving, its app untouched; another instance of the same location may start.
    assert first.client(echo).call(b"x") == [b"ok", b"x"]
    other = make_daemon("--instance", "other", storage=first.storage).start()
    assert other.info()["node"]["instance"] == "other"


def test_a_sigkilled_daemon_never_blocks_its_restart(make_daemon, tmp_path):
    daemon = make_daemon().start()
    echo = serve_echo(daemon, tmp_path)
    workers = daemon.workers()
    killed = daemon.proc.pid
    daemon.proc.kill()
    daemon.proc.wait(10)
    # At once: the kernel dropped the lock with the process, whatever its orphan workers still do.
    daemon.start()
    assert daemon.proc.pid != killed
    assert (daemon.storage / "default" / "cocained.lock").read_text() == f"{daemon.proc.pid}\n"
    assert daemon.client(echo).call(b"y") == [b"ok", b"y"]
    for pid in workers:
        wait_for(lambda: not alive(pid), timeout=10, message=f"orphan worker {pid} to exit")
