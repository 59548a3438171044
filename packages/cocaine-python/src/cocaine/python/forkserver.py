"""The fork server of one Python app generation: imports the app once, then forks ready workers.

Started by the process backend (cocaine/core/backends/forkserver.py, which documents the control
protocol) as ``python -m cocaine.python.forkserver --control-fd N --endpoint ... --app ... --path ...``,
a fresh interpreter, never a fork of the daemon.

Everything a worker runs is imported here before the app, pyzmq and the worker loop included, so
that a forked worker imports nothing: it makes its ZeroMQ context and connects. Importing pyzmq
is safe before a fork: it loads libzmq, which has no global state before ``zmq_ctx_new``, and
starts no thread and makes no context (pyzmq's own garbage-collector thread and ``Context.instance``
are created on first use, never here). The server itself never makes a context; an app whose
import starts threads (a context's first socket starts libzmq's) is not forked (``unforkable``).

Workers are forked with ``clone(CLONE_PARENT)``: they are the daemon's children, not ours, so the
daemon reaps them and reads their exit status and signal, kills them by pid, and they die with it
(``PR_SET_PDEATHSIG``) exactly like workers it starts itself; this server dying takes none of them.

The server keeps ``--spares`` *spares*: processes forked ahead of time that make their ZeroMQ
context (and start its threads; not with ``--endpoint fd``, where each worker is handed its stream
link and needs no context) and wait for a worker id and pipes. A spawn request takes the
oldest, and the server forks new ones once no request waits; with none left, it forks the worker
itself.
"""

# ruff: noqa: E402 - the process names itself before its slow imports (tests and ps tell it apart)
from __future__ import annotations

import ctypes
import os

#: The server's name in ps and /proc/PID/comm (its spare's while it waits); workers take back the
#: interpreter's. Set before the imports below, which take a while.
SERVER_NAME = b"cocaine-forksrv"
SPARE_NAME = b"cocaine-spare"
_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def set_name(name: bytes) -> None:
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)


if __name__ == "__main__":
    with open("/proc/self/comm", "rb") as _comm:
        INTERPRETER_NAME = _comm.read().strip()
    set_name(SERVER_NAME)

import gc
import json
import select
import socket
import sys

# What a worker runs, imported once here (before the app) so that a forked worker shares it and
# imports nothing; pyzmq makes no context and starts no thread at import (above).
import zmq

from cocaine.python import logs
from cocaine.python.worker import serve
from cocaine.python.loader import become_runtime, die_with_parent, load_module, runtime_arguments

EXIT_LOAD_FAILED = 3
_CLONE_PARENT = 0x00008000
_SIGCHLD = 17
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)


def fork_sibling() -> int:
    """``fork()``, except that the child's parent is our parent (the daemon). Python's own fork
    bookkeeping (locks, threading state, ``register_at_fork`` hooks) runs as for ``os.fork``."""
    if _SYS_CLONE is None:
        raise OSError(f"clone(CLONE_PARENT) is not wired for {os.uname().machine}")
    ctypes.pythonapi.PyOS_BeforeFork()
    # clone(flags, stack, parent_tid, child_tid, tls): stack 0 means "the caller's", like fork.
    pid = _libc.syscall(_SYS_CLONE, _CLONE_PARENT | _SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    errno = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, os.strerror(errno))
    return pid


def unforkable() -> str | None:
    """Why forking this process after the app's import would be unsafe, if it would be."""
    if "grpc" in sys.modules:
        return "the app imports grpc, which does not support fork() without exec"
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        return f"the app's import started {threads - 1} thread(s), which a fork would not copy"
    return None


def import_capturing_output(path: str, app: str):
    """Import the app with stdout and stderr in memory files; returns (module, stdout bytes, stderr
    bytes): what the import printed, which every worker writes to its own pipes as if it had
    imported the app itself."""
    saved = [os.dup(1), os.dup(2)]
    memory = [os.memfd_create("stdout"), os.memfd_create("stderr")]
    try:
        os.dup2(memory[0], 1)
        os.dup2(memory[1], 2)
        try:
            module = load_module(path, app)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        printed = []
        for fd in memory:
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            printed.append(b"".join(chunks))
        return module, printed[0], printed[1]
    finally:
        for fd in saved + memory:
            os.close(fd)


def _answer(sock: socket.socket, message: dict) -> None:
    """Answer one spawn request on its own socket (the daemon may be gone: then nobody listens)."""
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass
    finally:
        sock.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Server:
    """The loop: answers the daemon's spawn requests, keeping ``spares`` spares ready."""

    def __init__(self, control: socket.socket, args, module, forwarder, printed: tuple[bytes, bytes],
                 name: bytes) -> None:
        self.control = control
        self.args = args
        self.module = module
        self.forwarder = forwarder
        self.printed = printed
        self.name = name  # the interpreter's, which workers take back
        self.spares: list[tuple[int, socket.socket]] = []  # (pid, our end of its socket), oldest first
        self.links = 1 if args.endpoint == "fd" else 0  # each request brings the worker's stream link

    def tell(self, message: dict) -> None:
        self.control.send(json.dumps(message).encode())

    def run(self) -> int:
        """Serve until the daemon closes the control socket; in a forked child, return its status."""
        while True:
            # Spares are forked only while no request waits: a burst's requests are answered first.
            while len(self.spares) < self.args.spares and not select.select([self.control], [], [], 0)[0]:
                try:
                    status = self.fork_spare()
                except OSError:
                    break  # no spare for now: workers are forked on demand
                if status is not None:
                    return status  # we are a spare, and it has served as a worker
            try:
                message, fds, _, _ = socket.recv_fds(self.control, 65536, 3 + self.links)
            except OSError:
                return 0
            if not message:
                return 0  # the daemon closed the control socket: this generation is over
            if len(fds) != 3 + self.links:  # nowhere to answer: the daemon sees the request's socket closed
                for fd in fds:
                    os.close(fd)
                continue
            answer = socket.socket(fileno=fds.pop())
            try:
                request = json.loads(message)
                pid = self.hand_to_spare(request, fds)
                if pid is None:
                    pid = fork_sibling()
            except (OSError, ValueError) as e:
                for fd in fds:
                    os.close(fd)
                _answer(answer, {"error": str(e)})
                continue
            if pid == 0:
                answer.close()
                return self.worker(fds, request)
            for fd in fds:
                os.close(fd)
            _answer(answer, {"pid": pid})

    def fork_spare(self) -> int | None:
        """Fork the next worker ahead of time: it waits for its worker id and pipes. Returns None in
        the server, a worker's exit status in the spare; raises OSError if it cannot fork."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = fork_sibling()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            ours.close()
            return self.wait_as_spare(theirs)
        theirs.close()
        self.spares.append((pid, ours))
        self.tell({"spare": pid})
        return None

    def wait_as_spare(self, sock: socket.socket) -> int:
        self.detach(SPARE_NAME)
        context = None
        if not self.links:  # our context, ready before the request: its threads start with its first socket
            context = zmq.Context()
            context.socket(zmq.DEALER).close()
        message, fds, _, _ = socket.recv_fds(sock, 65536, 2 + self.links)
        sock.close()
        if not message or len(fds) != 2 + self.links:
            if context is not None:
                context.term()
            return 0  # the server went away before it needed us
        return self.become_worker(fds, json.loads(message), context)

    def hand_to_spare(self, request: dict, fds: list[int]) -> int | None:
        """Give the request to the oldest spare still there; its pid, or None when none is left."""
        while self.spares:
            pid, sock = self.spares.pop(0)
            try:
                if select.select([sock], [], [], 0)[0]:
                    raise OSError("the spare is gone")  # it never writes: readable means closed
                socket.send_fds(sock, [json.dumps(request).encode()], fds)
                return pid
            except OSError:
                self.tell({"gone": pid})
            finally:
                sock.close()
        return None

    def worker(self, fds: list[int], request: dict) -> int:
        """In a child forked for one request (no spare was ready): become its worker."""
        self.detach(self.name)
        return self.become_worker(fds, request, None if self.links else zmq.Context())

    def detach(self, name: bytes) -> None:
        """In a child: leave the server's session and sockets, die with the daemon (our parent)."""
        os.setsid()  # its own session, like a worker the daemon starts itself
        set_name(name)
        die_with_parent()
        self.control.close()
        for _, sock in self.spares:
            sock.close()
        self.spares = []

    def become_worker(self, fds: list[int], request: dict, context: zmq.Context | None) -> int:
        """Serve as the worker ``request`` names: on its stream link (``fds[2]``), or on
        ``context``, the first of this process's life (made after the fork), which is ours alone."""
        set_name(self.name)
        endpoint = f"fd:{fds[2]}" if self.links else self.args.endpoint
        for target, fd, data in zip((1, 2), fds, self.printed):
            os.dup2(fd, target)
            os.close(fd)
            if data:
                _write_all(target, data)
        os.environ.update(request.get("env") or {})
        try:
            return serve(context, endpoint=endpoint, worker_id=request["id"], path=self.args.path,
                         heartbeat=self.args.heartbeat, own_process=True, module=self.module,
                         forwarder=self.forwarder)
        finally:
            if context is not None:
                context.term()


def main(argv: list[str] | None = None) -> int:
    args = runtime_arguments(__doc__, ("--control-fd", {"type": int}), ("--spares", {"type": int})).parse_args(argv)
    become_runtime()  # and so are the workers it forks (line buffering and SIGINT are inherited)
    control = socket.socket(fileno=args.control_fd)
    forwarder = logs.LogForwarder.install(own_process=True)  # what the import logs goes with each worker's hello
    try:
        module, *printed = import_capturing_output(args.path, args.app)
    except BaseException:  # noqa: BLE001 - the worker the engine starts instead reports it, as it always did
        return EXIT_LOAD_FAILED
    reason = unforkable()
    if reason is not None:
        control.send(json.dumps({"unforkable": reason}).encode())
        return 0
    gc.freeze()  # what the import made is never touched by a worker's collector: its pages stay shared
    control.send(json.dumps({"ready": os.getpid()}).encode())
    return Server(control, args, module, forwarder, tuple(printed), INTERPRETER_NAME).run()


if __name__ == "__main__":
    sys.exit(main())
