"""Helpers for end-to-end tests: real daemons, real sockets, waits with deadlines."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CLI = [sys.executable, "-m", "cocaine.cli.app"]
RUN_TIMEOUT = 30  # seconds any one CLI run may take before the test fails


_handed_out: set[int] = set()


def _port_range() -> range:
    """Ports below the kernel's ephemeral range (so no outgoing connection takes one before the test
    binds it), and of those this xdist worker's own share: a port free when one worker checks it
    may be about to be bound by a daemon another worker is starting (its management socket binds
    only once it has imported everything), and a test would then talk to that daemon."""
    low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    first = max(1024, low - 12000)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % workers
    share = (low - first) // workers
    return range(first + index * share, first + (index + 1) * share)


def free_port() -> int:
    """A port free right now, of this test process's share (see _port_range) and never handed out
    twice in one test run."""
    ports = _port_range()
    while True:
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def tcp_connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to a local port, with ``timeout`` on every operation."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def helper_name(pid: int) -> str | None:
    """``cocaine-forksrv`` for a fork server, ``cocaine-spare`` for its spare, else None (a worker
    forked from it takes its interpreter's name back)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            name = f.read().strip()
    except OSError:
        return None
    return name if name in ("cocaine-forksrv", "cocaine-spare") else None


def dealer(context: zmq.Context, address: str, timeout_ms: int = 20_000) -> zmq.Socket:
    """A DEALER connected to ``address`` that waits at most ``timeout_ms`` for each message and
    leaves nothing behind when closed."""
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = timeout_ms
    sock.connect(address)
    return sock


class Client:
    """A REQ client with a receive timeout, so no test can hang on a silent server. ``curve`` is
    (client public key, client secret key, server public key) for a CURVE server."""

    def __init__(self, context: zmq.Context, address: str, timeout: float = 10.0, curve=None) -> None:
        self.sock = context.socket(zmq.REQ)
        self.sock.linger = 0
        self.sock.rcvtimeo = int(timeout * 1000)
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(address)

    def call(self, *frames: bytes) -> list[bytes]:
        self.sock.send_multipart(list(frames) or [b""])
        return self.sock.recv_multipart()

    def call_json(self, request) -> dict:
        self.sock.send(request if isinstance(request, bytes) else json.dumps(request).encode())
        return json.loads(self.sock.recv())

    def close(self) -> None:
        self.sock.close(0)


class Daemon:
    """A real ``cocained`` process on free ports, with storage and runtime folders under ``tmp``."""

    def __init__(self, tmp: Path, context: zmq.Context, *extra: str, python: str = sys.executable) -> None:
        self.tmp = tmp
        self.python = python
        self.context = context
        self.storage = tmp / "storage"
        self.runtime = tmp / "run"
        self.management = endpoint()
        self.log_path = tmp / "cocained.log"
        self.extra = extra
        self.curve = None  # the CURVE keys of management clients, for a daemon with --curve-*
        self.proc: subprocess.Popen | None = None
        self._clients: list[Client] = []

    def start(self) -> Daemon:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.python, "-m", "cocaine.core.daemon.main", "--storage-location", str(self.storage),
             "--runtime-dir", str(self.runtime), "--management", self.management, "--log-level", "debug",
             "--stop-timeout", "5", *self.extra],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_answering(timeout=20)
        return self

    def _wait_answering(self, timeout: float) -> None:
        """Send one probe and wait for its answer. A REQ's request waits in its queue until the daemon
        binds, so exactly one probe reaches it (tests count what a daemon refused, this probe included)."""
        probe = Client(self.context, self.management, curve=self.curve)
        try:
            probe.sock.send(json.dumps({"version": 2, "action": "info"}).encode())
            deadline = time.monotonic() + timeout
            while not probe.sock.poll(200):
                assert self.proc.poll() is None, f"cocained exited with {self.proc.returncode}:\n{self.log()}"
                if time.monotonic() > deadline:
                    raise AssertionError(f"cocained did not answer within {timeout} s (log: {self.log_path})")
            reply = json.loads(probe.sock.recv())
            assert "node" in reply or "signature required" in reply.get("error", ""), reply
            # Another process's daemon on our port would answer in its stead: say so, not later.
            assert "node" not in reply or reply["node"]["pid"] == self.proc.pid, \
                f"{self.management} is answered by another daemon (pid {reply['node']['pid']})"
        finally:
            probe.close()

    def client(self, address: str | None = None, timeout: float = 10.0) -> Client:
        client = Client(self.context, address or self.management, timeout,
                        curve=self.curve if address is None else None)
        self._clients.append(client)
        return client

    def request(self, request) -> dict:
        client = self.client()
        try:
            return client.call_json(request)
        finally:
            client.close()

    def create(self, name: str, manifest: dict) -> dict:
        reply = self.request({"version": 2, "action": "create", "apps": {name: manifest}})
        assert "error" not in reply.get(name, reply), reply
        return reply[name]

    def info(self, name: str | None = None) -> dict:
        reply = self.request({"version": 2, "action": "info"})
        return reply["apps"][name] if name else reply

    def workers(self) -> list[int]:
        """The daemon's live worker processes (its children, fork servers aside)."""
        return [pid for pid in children_of(self.proc.pid) if alive(pid) and not helper_name(pid)]

    def fork_servers(self) -> list[int]:
        return [pid for pid in children_of(self.proc.pid) if alive(pid) and helper_name(pid) == "cocaine-forksrv"]

    def spares(self) -> list[int]:
        """Processes a fork server forked ahead of the next worker (the daemon's children too)."""
        return [pid for pid in children_of(self.proc.pid) if alive(pid) and helper_name(pid) == "cocaine-spare"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; return the exit status. Asserts no worker (nor fork server) outlives the daemon."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        workers = self.workers() + self.fork_servers() + self.spares()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        for pid in workers:
            wait_for(lambda: not alive(pid), timeout=5, message=f"worker {pid} to exit with the daemon")
        return code

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


def assert_no_reactor_errors(daemon: Daemon) -> None:
    """An exception that reached a reactor loop is a bug, whatever the test was about."""
    errors = [line for line in daemon.log().splitlines() if ": unhandled error in " in line]
    assert not errors, "\n".join(errors[:5])


def python_app(tmp: Path, source: str, name: str = "app.py") -> str:
    path = tmp / name
    path.write_text(source)
    return str(path)


def manifest(args: str, tasks: dict, **engine) -> dict:
    engine = {k.replace("_", "-"): v for k, v in engine.items()}
    return {"type": "python", "args": args, "engine": engine, "tasks": tasks}


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def task_topics(tasks) -> list[str]:
    """The topic prefixes of these tasks' results and errors only (not the engine's events, stats, logs)."""
    return [f"{task} " for task in tasks]


class Subscriber:
    """A SUB socket on an app's pubsub endpoint: ``(topic, meta, payload)`` messages, with deadlines.

    Messages that :meth:`wait` passes over are kept for later ones, so a test can wait for messages in
    any order (a worker's stdout and its protocol log travel different ways)."""

    def __init__(self, context: zmq.Context, address: str, *prefixes: str) -> None:
        self.sock = context.socket(zmq.SUB)
        self.sock.linger = 0
        for prefix in prefixes or ("",):
            self.sock.subscribe(prefix.encode())
        self.sock.connect(address)
        self.kept: list[tuple[str, dict, list[bytes]]] = []

    def next(self, timeout: float = 10.0) -> tuple[str, dict, list[bytes]]:
        if self.kept:
            return self.kept.pop(0)
        if not self.sock.poll(timeout * 1000):
            raise AssertionError(f"no publication within {timeout} s")
        return self._receive()

    def _receive(self) -> tuple[str, dict, list[bytes]]:
        topic, meta, *payload = self.sock.recv_multipart()
        return topic.decode(), json.loads(meta), payload

    def first(self, trigger, timeout: float = 10.0, every: float = 0.2) -> tuple[str, dict, list[bytes]]:
        """Call ``trigger()`` again and again until a publication arrives: the subscription may not
        be in place yet when the first one is published (ZeroMQ's slow joiner)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            trigger()
            if self.sock.poll(every * 1000):
                return self.next()
        raise AssertionError(f"no publication within {timeout} s")

    def until(self, predicate, timeout: float = 10.0) -> tuple[str, dict, list[bytes]]:
        """The first publication for which ``predicate(topic, meta, payload)`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.0, deadline - time.monotonic()))
            if predicate(*message):
                return message

    def wait(self, prefix: str, where=lambda meta: True, timeout: float = 15.0) -> tuple[str, dict, list[bytes]]:
        """The first message (kept or new) whose topic starts with ``prefix`` and whose meta passes
        ``where``; the others stay kept. Fails the test at the deadline, listing the topics seen."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (topic, meta, payload) in enumerate(self.kept):
                if topic.startswith(prefix) and where(meta):
                    del self.kept[i]
                    return topic, meta, payload
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                seen = sorted({topic for topic, _, _ in self.kept})
                raise AssertionError(f"no {prefix!r} message within {timeout} s; kept: {seen}")
            while self.sock.poll(0):
                self.kept.append(self._receive())

    def close(self) -> None:
        self.sock.close(0)


def admin_env(env: dict | None = None) -> dict:
    """The environment of a cocaine-admin run: the caller's, without its COCAINE_* settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COCAINE_")}
    environ.update(env or {})
    return environ


def admin(*args: str, endpoint: str | None = None, env: dict | None = None, cwd=None,
          timeout: float = RUN_TIMEOUT, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run cocaine-admin as its own process. Output is text, or bytes when ``input`` (stdin) is bytes."""
    argv = [*CLI, *(["--endpoint", endpoint] if endpoint else []), *args]
    return subprocess.run(argv, capture_output=True, text=input is None, timeout=timeout, env=admin_env(env),
                          cwd=cwd, input=input, stdin=subprocess.DEVNULL if input is None else None)


# App-side code for test apps: a handler waits for a file that the test creates when it is ready
# (synchronisation through a real file, with a deadline, never through sleeps in the test).
APP_WAIT_FOR_FILE = """
import os as _os, time as _time

def wait_for_file(path, timeout=20.0):
    deadline = _time.monotonic() + timeout
    while not _os.path.exists(path):
        if _time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        _time.sleep(0.005)
"""

# App-side code for test apps: a handler that reads a streamed request more slowly than a client sends.
APP_SLOW_COUNT = """
import time as _time

def count(request):
    total = 0
    for chunk in request:
        total += len(chunk)
        _time.sleep(0.001)  # slower than the sender
    return str(total)
"""


class MemoryWatch:
    """The peak resident memory of some processes while a test runs, against where they started."""

    def __init__(self, *pids: int) -> None:
        self.before = {pid: rss(pid) for pid in pids}
        self.peak = dict(self.before)

    def sample(self) -> None:
        for pid in self.peak:
            self.peak[pid] = max(self.peak[pid], rss(pid))

    def assert_grew_less_than(self, limit: int, payload: int) -> None:
        for pid, peak in self.peak.items():
            growth = peak - self.before[pid]
            assert growth < limit, f"process {pid} grew by {growth} bytes for a {payload}-byte request"
