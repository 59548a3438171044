"""A Python worker: loads the app's module, then serves the engine's invokes until told to stop.

Run by the engine as ``python -m cocaine.python.worker --endpoint ... --id ... --path app.py``.
The engine <-> worker protocol is specified in docs/protocol.md.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import inspect
import logging
import os
import signal
import sys
import time
import traceback
from types import ModuleType

import zmq

from cocaine.core import protocol
from cocaine.core.errors import Code
from cocaine.core.transport import send_frames
from cocaine.python.request import Request

EXIT_LOAD_FAILED = 3
ENGINE_SILENCE_LIMIT = 3  # heartbeat intervals without a word from the engine before giving up


def load_module(path: str, worker_id: str) -> ModuleType:
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # the app may import its sibling modules
    # One module object per worker, so that thread-backend workers do not share module state.
    name = "cocaine_app_" + "".join(c if c.isalnum() else "_" for c in worker_id)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def die_with_parent() -> None:
    """Exit when the daemon dies, even by SIGKILL: no orphan workers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    expected = os.environ.get("COCAINE_PARENT_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the daemon died before the death signal was armed


class Handlers:
    """The app's handlers by task name, each wrapped once to take a request or nothing."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self._cache: dict = {}

    def get(self, task: str):
        handler = self._cache.get(task)
        if handler is None:
            target = getattr(self.module, task, None)
            if not callable(target):
                return None
            handler = self._cache[task] = _adapt(target)
        return handler


def _adapt(target):
    try:
        takes_request = bool(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        takes_request = True
    return target if takes_request else (lambda _request: target())


class Worker:
    def __init__(self, sock: zmq.Socket, handlers: Handlers, heartbeat: float) -> None:
        self.sock = sock
        self.handlers = handlers
        self.heartbeat = heartbeat
        self.out: list[bytes] = []
        self.last_heard = time.monotonic()

    def run(self) -> None:
        sock = self.sock
        sock.send(protocol.hello(os.getpid()))
        while True:
            if not sock.poll(self.heartbeat * 1000):
                if time.monotonic() - self.last_heard > ENGINE_SILENCE_LIMIT * self.heartbeat:
                    return  # the engine is gone
                sock.send(protocol.HEARTBEAT_FRAME)
                continue
            self.last_heard = time.monotonic()
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for frame in frames:
                    if not self.handle(protocol.unpack(frame)):
                        self.flush()
                        return
            self.flush()

    def flush(self) -> None:
        if self.out:
            send_frames(self.sock, self.out)
            self.out.clear()  # in place: invoke() holds a reference to this list

    def handle(self, message: list) -> bool:
        """Apply one engine message; False when the worker must stop."""
        kind = message[0]
        if kind == protocol.INVOKE:
            job, task, meta, body, _closed = message[1:6]  # later versions may append elements
            self.invoke(job, task, meta, body)
        elif kind == protocol.TERMINATE:
            return False
        return True

    def invoke(self, job: int, task: str, meta: dict, body: bytes | None) -> None:
        out = self.out
        deadline = meta.get("deadline")
        if deadline is not None and time.time() > deadline:
            out.append(protocol.error(job, Code.TIMEOUT, "deadline exceeded before the job started"))
            return
        handler = self.handlers.get(task)
        if handler is None:
            out.append(protocol.error(job, Code.APP, f"the app has no callable {task!r}"))
            return
        try:
            result = handler(Request(job, task, body, meta))
            if result is None:
                pass
            elif isinstance(result, (bytes, bytearray, memoryview, str)):
                out.append(protocol.chunk(job, _to_bytes(result)))
            elif hasattr(result, "__iter__"):
                # Stream: each chunk leaves as soon as the handler produces it.
                for item in result:
                    out.append(protocol.chunk(job, _to_bytes(item)))
                    self.flush()
            else:
                raise TypeError(f"handler returned {type(result).__name__}; "
                                "expected bytes, str, None or an iterable of them")
        except Exception as e:  # noqa: BLE001 - the app's error becomes this request's error reply
            sys.stderr.write(f"app error in task {task!r} (job {job}):\n{traceback.format_exc()}")
            out.append(protocol.error(job, Code.APP, f"{type(e).__name__}: {e}"))
            return
        out.append(protocol.end(job))


def _to_bytes(item) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"handler produced {type(item).__name__}; expected bytes or str")


def serve(context: zmq.Context, *, endpoint: str, worker_id: str, path: str, heartbeat: float) -> int:
    """Load the app and serve the engine until told to stop; return the exit status."""
    sock = context.socket(zmq.DEALER)
    sock.identity = worker_id.encode()
    sock.linger = 1000
    sock.connect(endpoint)
    try:
        try:
            module = load_module(path, worker_id)
        except BaseException as e:  # noqa: BLE001 - SystemExit at import is a failed load too
            sys.stderr.write(f"worker {worker_id}: cannot load {path}:\n{traceback.format_exc()}")
            sock.send(protocol.log(logging.ERROR, f"cannot load {path}: {type(e).__name__}: {e}"))
            return EXIT_LOAD_FAILED
        Worker(sock, Handlers(module), heartbeat).run()
        return 0
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    args = parser.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when its workers stop
    context = zmq.Context()
    try:
        return serve(context, endpoint=args.endpoint, worker_id=args.id, path=args.path, heartbeat=args.heartbeat)
    finally:
        context.term()


if __name__ == "__main__":
    sys.exit(main())
