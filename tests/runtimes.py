"""Helpers for testing every language's runtime: the conformance apps, building C++ apps, and a
scripted engine that talks to one real worker process frame by frame."""

from __future__ import annotations

import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq

from cocaine.core import worker_protocol
from cocaine.core.errors import ConfigError
from cocaine.core.plugins import Registry
from support import EXAMPLES, endpoint, wait_for

LANGUAGES = ["python", "cpp", "perl", "js"]
#: The runtimes whose handlers are paced by the engine's grants (docs/protocol.md, "Streamed responses").
PACED = ["python", "cpp", "perl", "js"]
CONFORMANCE = EXAMPLES / "conformance"
APP_FILES = {"python": "app.py", "cpp": "app.cpp", "perl": "app.pl", "js": "app.js"}
# An app in each language that fails while loading.
BROKEN_APPS = {
    "python": ("broken.py", "raise RuntimeError('broken on purpose')\n"),
    "cpp": ("broken.cpp", "int not_an_app = 1;\n"),
    "perl": ("broken.pl", "die \"broken on purpose\\n\";\n"),
    "js": ("broken.js", "throw new Error('broken on purpose');\n"),
}

# The one command docs/cpp.md gives to build a C++ app (run by bash, `python` being the venv's).
CPP_BUILD_COMMAND = 'g++ -std=c++17 -O2 -fPIC -shared -I "$(python -m cocaine.cpp include)" app.cpp -o app.so'


def language_class(name: str):
    return Registry.load().get("language", name)


def require_runtime(name: str) -> None:
    """Skip a test whose language runtime is not installed here; in CI (CI=true) fail instead, since
    .ci/run installs every runtime."""
    check = getattr(language_class(name), "check_runtime", None)
    if check is None:
        return  # python: the runtime is this interpreter
    try:
        check()
    except ConfigError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{name} runtime not installed: {e}")


def build_cpp_app(source: Path, folder: Path) -> Path:
    """Build ``source`` into ``folder/app.so`` with the documented command."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / "app.cpp")
    command = CPP_BUILD_COMMAND.replace("python -m", f"{shlex.quote(sys.executable)} -m")
    done = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return folder / "app.so"


def app_source(language: str, folder: Path, source: str, name: str) -> str:
    """Write an app's code (a C++ source is built into a .so); return what the manifest's args gets."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    if language == "cpp":
        return str(build_cpp_app(path, folder / "build"))
    return str(path)


def serve_tasks(daemon, app: str, language: str, args: str, tasks, *, extra_tasks=None,
                **sections) -> Callable[..., list[bytes]]:
    """Create ``app`` with one zeromq-server task per name in ``tasks`` (plus ``extra_tasks``, and
    other manifest ``sections`` such as engine); return call(task, *frames)."""
    addresses = {task: endpoint() for task in tasks}
    servers = {t: {"type": "zeromq-server", "endpoint": a} for t, a in addresses.items()}
    daemon.create(app, {"type": language, "args": args, "tasks": {**servers, **(extra_tasks or {})}, **sections})
    return lambda task, *frames: daemon.client(addresses[task]).call(*frames)


def serve_slow_task(daemon, app: str, language: str, args: str, engine: dict) -> str:
    """Create ``app``: the conformance app's `slow` task (``slept N`` after N ms) behind a
    zeromq-server, with ``engine`` (``pool-min`` 1); return its address once one worker is ready."""
    address = endpoint()
    daemon.create(app, {"type": language, "args": args, "engine": engine,
                        "tasks": {"slow": {"type": "zeromq-server", "endpoint": address}}})
    wait_for(lambda: (lambda p: p["total"] == 1 and not p["starting"])(daemon.info(app)["pool"]),
             timeout=30, message="one ready worker")
    return address


def serve_files(daemon, folder: Path, language: str, files: dict[str, str], tasks) -> Callable[..., list[bytes]]:
    """Write ``files`` (name -> source; the first is the app, the others its modules) into ``folder``
    and serve the app's ``tasks`` (see serve_tasks)."""
    require_runtime(language)
    for name, source in files.items():
        (folder / name).write_text(source)
    return serve_tasks(daemon, language, language, str(folder / next(iter(files))), tasks)


class ScriptedEngine:
    """The engine's side of the worker protocol played by hand against one real worker.

    ``start_worker`` starts the worker process exactly as the engine would (the language's
    WorkerSpec, the same environment), over ZeroMQ or, with ``link="stream"``, over a stream link
    (docs/protocol.md, "Stream link"); a worker may also run in this process (cocaine_serve from a
    thread). Replies are read frame by frame, each protocol message's bytes as the worker wrote them:
    how a worker groups them into ZeroMQ messages or stream writes is its own business.
    """

    def __init__(self, context: zmq.Context, tmp: Path, endpoint: str | None = None) -> None:
        self.tmp = tmp
        self.sock = context.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.endpoint = endpoint or f"ipc://{tmp}/engine.sock"
        self.sock.bind(self.endpoint)
        self.identity = b"w1"
        self.proc: subprocess.Popen | None = None
        self.log_path = tmp / "worker.log"
        self.pending: list[bytes] = []
        self.link: StreamEnd | None = None  # the engine's end of a stream link, if the worker has one

    def start_worker(self, language: str, args: str, heartbeat: float = 5.0, link: str = "zeromq") -> ScriptedEngine:
        cls = language_class(language)
        endpoint, theirs = self.endpoint, None
        if link == "stream":
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.link = StreamEnd(ours)
            endpoint = f"fd:{theirs.fileno()}"
        spec = cls(cls.validate_args(args, "args")).worker_spec(
            app="conformance", worker_id=self.identity.decode(), endpoint=endpoint, heartbeat_interval=heartbeat)
        env = dict(os.environ, **spec.env, COCAINE_PARENT_PID=str(os.getpid()))
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(spec.argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, pass_fds=[theirs.fileno()] if theirs else [])
        finally:
            if theirs is not None:
                theirs.close()
        return self

    def send(self, *frames: bytes) -> None:
        """One ZeroMQ message (or one write on a stream link) carrying ``frames`` to the worker."""
        if self.link is not None:
            self.link.sock.sendall(b"".join(frames))
        else:
            self.sock.send_multipart([self.identity, *frames])

    def _poll(self, timeout: float) -> bool:
        if self.link is not None:
            return self.link.poll(timeout)
        return bool(self.sock.poll(timeout * 1000))

    def _receive(self) -> list[bytes]:
        """The protocol messages the worker sent, as it encoded them ([] once it closed its end)."""
        if self.link is not None:
            return self.link.receive()
        identity, *frames = self.sock.recv_multipart()
        assert identity == self.identity
        return frames

    def frame(self, timeout: float = 10.0, skip_heartbeats: bool = True) -> bytes:
        """The worker's next protocol frame."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                frame = self.pending.pop(0)
                if not (skip_heartbeats and frame == worker_protocol.HEARTBEAT_FRAME):
                    return frame
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll(left):
                raise AssertionError(f"no frame from the worker within {timeout} s; its log:\n{self.log()}")
            self.pending.extend(self._receive())

    def frames(self, count: int, **kwargs) -> list[bytes]:
        return [self.frame(**kwargs) for _ in range(count)]

    def replies(self, jobs) -> dict[int, list[bytes]]:
        """Frames until each of ``jobs`` has ended (or failed), by job. A worker may interleave the
        replies of different jobs; each job's own frames keep their order."""
        by_job: dict[int, list[bytes]] = {}
        open_jobs = set(jobs)
        while open_jobs:
            frame = self.frame()
            message = worker_protocol.unpack(frame)
            by_job.setdefault(message[1], []).append(frame)
            if message[0] in (worker_protocol.END, worker_protocol.ERROR):
                open_jobs.discard(message[1])
        return by_job

    def becomes_quiet(self, seconds: float, within: float = 5.0) -> bool:
        """True once the worker has sent nothing at all (not even a heartbeat) for ``seconds``, within
        ``within`` seconds; heartbeats sent meanwhile (before a handler started) are dropped."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.pending.clear()
            if not self._poll(seconds):
                return True
            self._receive()
        return False

    def hello(self) -> bytes:
        return self.frame()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
        self.sock.close(0)
        if self.link is not None:
            self.link.sock.close()


class StreamEnd:
    """The scripted engine's end of a stream link: splits what the worker writes into its protocol
    messages, keeping each one's bytes exactly as written (a message may span reads)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def poll(self, timeout: float) -> bool:
        return not self.closed and bool(select.select([self.sock], [], [], timeout)[0])

    def receive(self) -> list[bytes]:
        data = self.sock.recv(1 << 20)
        if not data:
            self.closed = True
            return []
        self.buffer += data
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(self.buffer)
        messages, start = [], 0
        for _ in unpacker:
            end = unpacker.tell()
            messages.append(self.buffer[start:end])
            start = end
        self.buffer = self.buffer[start:]
        return messages


