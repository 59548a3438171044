"""cocaine-admin tail, call and top, driven as a user would: real processes against a real daemon,
``top`` in a real terminal (tmux), its screen read back."""

from __future__ import annotations

import json
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
import zmq
import zmq.auth

from support import APP_WAIT_FOR_FILE, CLI, admin, admin_env, endpoint, free_port, manifest, python_app, wait_for

APP = '''
import sys, time

def echo(request):
    return request.body

def fails(request):
    raise ValueError("bad input: " + request.text())

def hang(request):
    time.sleep(2)

def tick(request):
    return b"tock"
'''


@pytest.fixture
def app(daemon, tmp_path):
    """An app bound the way operators write manifests: tcp://lo:P for tasks, tcp://*:P for pubsub."""
    ports = {name: free_port() for name in ("echo", "fails", "hang", "pubsub")}
    m = manifest(python_app(tmp_path, APP), {
        "echo": {"type": "zeromq-server", "endpoint": f"tcp://lo:{ports['echo']}"},
        "fails": {"type": "zeromq-server", "endpoint": f"tcp://lo:{ports['fails']}"},
        "hang": {"type": "zeromq-server", "endpoint": f"tcp://lo:{ports['hang']}"},
        "tick": {"type": "recurring-timer", "interval": 60_000},
    })
    m["pubsub"] = {"endpoint": f"tcp://*:{ports['pubsub']}", "stats-interval": 0.2}
    daemon.create("demo", m)
    return ports


class Lines:
    """The stdout of a running process, read line by line with deadlines."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.lines: list[str] = []

    def wait(self, predicate, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if predicate(line):
                    self.lines.remove(line)
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line within {timeout} s; got: {self.lines}")
            if self.selector.select(left):
                data = self.proc.stdout.read1(65536)
                if not data:
                    raise AssertionError(f"the process ended ({self.proc.wait()}); got: {self.lines}")
                *complete, self.buffer = (self.buffer + data).split(b"\n")
                self.lines.extend(line.decode() for line in complete)


def spawn(*args: str, endpoint: str) -> subprocess.Popen:
    """The CLI as a terminal starts it: with Ctrl-C at its default. A process started with SIGINT
    ignored keeps ignoring it (as a shell's background job does), and the test process may have it
    ignored: under the full suite, an xdist worker had SIGINT and SIGQUIT ignored (/proc status
    SigIgn), which its children inherit."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([*CLI, "--endpoint", endpoint, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=admin_env())
    finally:
        signal.signal(signal.SIGINT, previous)


def stop(proc: subprocess.Popen) -> tuple[int, bytes, bytes]:
    """Ctrl-C: the exit status, and the rest of stdout and stderr, read meanwhile (a process that
    exits flushes its output first, which a full pipe would hold up)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=10)
        return proc.returncode, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- tail -----------------------------------------------------------------------------------------
def test_tail_json_lines_with_a_topic_and_a_count(daemon, app):
    result = admin("--json", "tail", "demo", "--topic", "@stats", "--count", "2", endpoint=daemon.management)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(entries) == 2 and all(e["topic"] == "@stats" and e["payload"] == [] for e in entries)
    assert entries[0]["meta"]["app"] == "demo" and "tasks" in entries[0]["meta"]


def test_tail_follows_events_and_logs_until_ctrl_c(daemon, app):
    proc = spawn("tail", "demo", endpoint=daemon.management)
    try:
        lines = Lines(proc)
        lines.wait(lambda line: " @stats  workers " in line)  # subscribed: what follows is not lost
        result = admin("call", "demo", "fails", "oops", endpoint=daemon.management)
        assert result.returncode == 1
        spawned = lines.wait(lambda line: " @worker spawned  worker=demo." in line)
        assert re.match(r"^\d\d:\d\d:\d\d\.\d{3}  @worker spawned  worker=demo\.\S+  pid=\d+  generation=1", spawned)
        error = lines.wait(lambda line: " @log error  " in line)
        assert error.endswith("[log]  task 'fails' job 1 failed: ValueError: bad input: oops"), error
        lines.wait(lambda line: line.strip() == "ValueError: bad input: oops")  # the traceback, indented
        lines.wait(lambda line: "fails: " in line and "1 failed" in line)  # the next @stats
    finally:
        status, _, err = stop(proc)
    assert (status, err) == (0, b"")


def test_tail_of_an_app_without_pubsub(daemon, tmp_path):
    daemon.create("quiet", manifest(python_app(tmp_path, APP), {"echo": {"type": "zeromq-server",
                                                                         "endpoint": f"tcp://127.0.0.1:{free_port()}"}}))
    result = admin("tail", "quiet", endpoint=daemon.management)
    assert result.returncode == 1
    assert result.stderr == "cocaine-admin: quiet: the app has no pubsub endpoint (manifest key pubsub.endpoint)\n"


# -- call -----------------------------------------------------------------------------------------
def test_call_writes_the_response_and_reads_stdin(daemon, app):
    result = admin("call", "demo", "echo", "hello", endpoint=daemon.management)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello", "")
    body = bytes(range(256)) * 4
    result = admin("call", "demo", "echo", "-", endpoint=daemon.management, input=body)
    assert (result.returncode, result.stdout, result.stderr) == (0, body, b"")
    empty = admin("call", "demo", "echo", endpoint=daemon.management)
    assert (empty.returncode, empty.stdout) == (0, "")


@pytest.mark.parametrize(("args", "status", "message"), [
    (["fails", "oops"], 1, "call demo fails: error 502: ValueError: bad input: oops"),
    (["ghost"], 1, "demo has no task 'ghost'"),
    (["tick"], 1, "demo tick: a recurring-timer task takes no requests (call works with native-server, zeromq-server)"),
])
def test_call_errors(daemon, app, args, status, message):
    result = admin("call", "demo", *args, endpoint=daemon.management)
    assert result.returncode == status
    assert (result.stdout, result.stderr) == ("", f"cocaine-admin: {message}\n")


def test_call_gives_up_after_the_timeout(daemon, app):
    started = time.monotonic()
    result = admin("--timeout", "1", "call", "demo", "hang", endpoint=daemon.management)
    assert result.returncode == 3 and time.monotonic() - started < 15
    assert result.stderr == f"cocaine-admin: call demo hang: no reply from tcp://127.0.0.1:{app['hang']} within 1 s\n"


@pytest.mark.parametrize("driver", [{"type": "native-server"}, {"type": "zeromq-server", "replies": "stream"}],
                         ids=["native-server", "zeromq-server-stream"])
def test_call_streams_a_response_as_it_comes(daemon, tmp_path, driver):
    source = APP_WAIT_FOR_FILE + """
def stream(request):
    yield b"first\\n"
    wait_for_file(request.text())
    yield b"second\\n"

def fails(request):
    raise KeyError("nope")
"""
    tasks = {"stream": {**driver, "endpoint": endpoint()}, "fails": {**driver, "endpoint": endpoint()}}
    daemon.create("nat", manifest(python_app(tmp_path, source), tasks))
    go = tmp_path / "go"
    proc = spawn("call", "nat", "stream", str(go), endpoint=daemon.management)
    try:
        lines = Lines(proc)
        lines.wait(lambda line: line == "first")  # before the handler may go on
        go.touch()
        lines.wait(lambda line: line == "second")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    failed = admin("call", "nat", "fails", endpoint=daemon.management)
    assert (failed.returncode, failed.stderr) == (1, "cocaine-admin: call nat fails: error 502: KeyError: 'nope'\n")


def test_call_unknown_app(daemon):
    result = admin("call", "ghost", "echo", endpoint=daemon.management)
    assert result.returncode == 1 and result.stderr == "cocaine-admin: ghost: no app named 'ghost'\n"


@pytest.mark.parametrize(("bound", "management", "expected"), [
    ("tcp://lo:9200", "tcp://127.0.0.1:5000", "tcp://127.0.0.1:9200"),
    ("tcp://*:9200", "tcp://127.0.0.1:5000", "tcp://127.0.0.1:9200"),
    ("tcp://*:9200", "tcp://db1.example.org:5000", "tcp://db1.example.org:9200"),
    ("tcp://eth7:9200", "tcp://10.1.2.3:5000", "tcp://10.1.2.3:9200"),
    ("tcp://10.0.0.5:9200", "tcp://127.0.0.1:5000", "tcp://10.0.0.5:9200"),
    ("ipc:///run/x.sock", "tcp://127.0.0.1:5000", "ipc:///run/x.sock"),
])
def test_connectable_endpoints(bound, management, expected):
    from cocaine.cli.endpoints import connectable

    assert connectable(bound, management) == expected


# -- top ------------------------------------------------------------------------------------------
class Tmux:
    """One tmux server of our own (its own socket), one window of a fixed size."""

    def __init__(self, command: str, width: int = 170, height: int = 30) -> None:
        self.socket = f"cocaine-test-{uuid.uuid4().hex[:8]}"
        self.run("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), command)

    def run(self, *args: str) -> str:
        # The terminal's size comes from the terminal: not from a COLUMNS the test runner may have set.
        env = {k: v for k, v in admin_env().items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              check=True, env=env).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def wait_screen(self, predicate, timeout: float = 20.0, message: str = "the screen") -> str:
        last = []

        def check():
            last[:] = [self.screen()]
            return predicate(last[0])

        try:
            wait_for(check, timeout=timeout, interval=0.1, message=message)
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen:\n{last[0] if last else ''}") from None
        return last[0]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def line_of(screen: str, start: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(start)), "")


def requests_per_second(line: str) -> float:
    """The REQ/S figure of a task's line: the number just before its sparkline."""
    match = re.search(r"(\d+(?:\.\d+)?)\s+[ ▁▂▃▄▅▆▇█]*[▁▂▃▄▅▆▇█]", line)
    return float(match.group(1)) if match else 0.0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_top_in_a_terminal(daemon, app):
    command = " ".join([*CLI, "--endpoint", daemon.management, "top", "--interval", "0.3"])
    tmux = Tmux(f"{command}; echo top exited $?; sleep 60")
    stop_load = threading.Event()

    def load():
        sock = daemon.context.socket(zmq.REQ)
        sock.linger = 0
        sock.rcvtimeo = 5000
        sock.connect(f"tcp://127.0.0.1:{app['echo']}")
        try:
            while not stop_load.is_set():
                sock.send(b"x")
                sock.recv_multipart()
                time.sleep(0.005)
        finally:
            sock.close(0)

    loader = threading.Thread(target=load, daemon=True)
    try:
        screen = tmux.wait_screen(lambda s: "q: quit" in s and line_of(s, "demo").split()[1:2] == ["running"],
                                  message="top to show the app")
        assert "APP / TASK" in screen and "REQ/S" in screen and "HISTORY" in screen, screen
        assert line_of(screen, "  tick").split()[1] == "recurring-timer"
        loader.start()
        screen = tmux.wait_screen(lambda s: requests_per_second(line_of(s, "  echo")) > 5,
                                  message="requests/s of the echo task")
        assert re.search(r"[▂▃▄▅▆▇█]", line_of(screen, "  echo")), screen  # the history has bars
        assert " MiB" in line_of(screen, "demo")
        fails = daemon.client(f"tcp://127.0.0.1:{app['fails']}")
        for _ in range(3):
            assert fails.call(b"x")[:2] == [b"error", b"502"]
        tmux.wait_screen(lambda s: re.search(r"\b3 \+", line_of(s, "  fails")) or " 3 " in line_of(s, "  fails"),
                         message="the errors of the fails task")
        tmux.run("send-keys", "-t", "top", "q")
        screen = tmux.wait_screen(lambda s: "top exited" in s, message="top to quit on q")
        assert "top exited 0" in screen and "APP / TASK" not in screen  # the screen is given back
    finally:
        stop_load.set()
        if loader.is_alive():
            loader.join(10)
        tmux.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_top_quits_on_ctrl_c_and_survives_a_daemon_that_is_gone(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    tmux = Tmux(" ".join([*CLI, "--endpoint", address, "top", "--interval", "0.3"]) + "; echo top exited $?; sleep 60")
    try:
        tmux.wait_screen(lambda s: f"no answer from {address}" in s, message="top to report the silent daemon")
        tmux.run("send-keys", "-t", "top", "C-c")
        screen = tmux.wait_screen(lambda s: "top exited" in s, message="top to quit on Ctrl-C")
        assert "top exited 0" in screen and "Traceback" not in screen
    finally:
        tmux.close()


def test_top_without_a_terminal_prints_one_view(daemon, app):
    result = admin("top", endpoint=daemon.management)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("node ") and "q: quit" in lines[0]
    assert line_of(result.stdout, "demo").split()[:2] == ["demo", "running"]
    assert [line.split()[0] for line in lines if line.startswith("  ")] == ["echo", "fails", "hang", "tick"]


def test_tail_and_call_speak_curve_with_the_clis_keys(make_daemon, tmp_path):
    keys = tmp_path / "keys"
    (keys / "allowed").mkdir(parents=True)
    for name in ("server", "operator"):
        assert admin("keygen", "--curve", str(keys / name)).returncode == 0
    (keys / "allowed" / "operator.key").write_text((keys / "operator.key").read_text())
    daemon = make_daemon("--curve-secret-key", str(keys / "server.key_secret"),
                         "--curve-clients", str(keys / "allowed"))
    daemon.curve = (*zmq.auth.load_certificate(keys / "operator.key_secret"),
                    zmq.auth.load_certificate(keys / "server.key")[0])
    daemon.start()
    m = manifest(python_app(tmp_path, APP + "streamed = echo\n"), {
        "echo": {"type": "zeromq-server", "endpoint": endpoint()},
        "streamed": {"type": "zeromq-server", "endpoint": endpoint(), "replies": "stream"}})
    m["pubsub"] = {"endpoint": endpoint(), "stats-interval": 0.2}
    daemon.create("sealed", m)
    curve = ["--curve-key", str(keys / "operator.key_secret"), "--curve-server-key", str(keys / "server.key")]

    for task in ("echo", "streamed"):
        called = admin(*curve, "call", "sealed", task, "secret", endpoint=daemon.management)
        assert (called.returncode, called.stdout, called.stderr) == (0, "secret", "")
    tailed = admin(*curve, "--json", "tail", "sealed", "--topic", "@stats", "--count", "1", endpoint=daemon.management)
    assert tailed.returncode == 0, tailed.stderr
    assert json.loads(tailed.stdout)["meta"]["app"] == "sealed"


# -- call in a terminal ---------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_call_ends_its_line_on_a_terminal_and_never_when_piped(daemon, app, tmp_path):
    source = 'def partial(request):\n    yield b"part"\n    raise ValueError("broken")\n'
    daemon.create("nat", manifest(python_app(tmp_path, source, "nat.py"),
                                  {"partial": {"type": "native-server", "endpoint": endpoint()}}))
    cli = " ".join([*CLI, "--endpoint", daemon.management])
    # Each "[status]" starts a line only if the command before it ended its own.
    script = "; ".join([
        f"{cli} call demo echo hello", 'echo "[$?]"',
        f"printf 'a line\\n' | {cli} call demo echo -", 'echo "[$?]"',  # already ends with one: no second
        f"{cli} call nat partial", 'echo "[$?]"',  # a chunk, then an error: the error gets its own line
        f"{cli} call demo echo hello | wc -c", 'echo "[$?]"',  # piped: the app's 5 bytes, no more
        "echo done", "sleep 60"])
    tmux = Tmux(script)
    try:
        screen = tmux.wait_screen(lambda s: "done" in s, message="the calls to finish")
    finally:
        tmux.close()
    lines = [line.rstrip() for line in screen.splitlines()]
    assert lines[:lines.index("done")] == [
        "hello", "[0]",
        "a line", "[0]",
        "part", "cocaine-admin: call nat partial: error 502: ValueError: broken", "[1]",
        "5", "[0]",
    ], screen
    piped = admin("call", "nat", "partial", endpoint=daemon.management)
    assert (piped.returncode, piped.stdout) == (1, "part")
