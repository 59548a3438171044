"""The fork server of one Python app generation: imports the app once, then forks ready workers.

Started by the process backend (cocaine/core/backends/forkserver.py, which documents the control
protocol) as ``python -m cocaine.python.forkserver --control-fd N --endpoint ... --app ... --path ...``,
a fresh interpreter, never a fork of the daemon. Nothing ZeroMQ (nor gRPC) is imported here before
a fork: each worker imports pyzmq and makes its own context after it.

Workers are forked with ``clone(CLONE_PARENT)``: they are the daemon's children, not ours, so the
daemon reaps them and reads their exit status and signal, kills them by pid, and they die with it
(``PR_SET_PDEATHSIG``) exactly like workers it starts itself; this server dying takes none of them.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import signal
import socket
import sys

# What a worker needs besides pyzmq, imported once here so that a forked worker shares it.
import asyncio  # noqa: F401
import inspect  # noqa: F401
import logging  # noqa: F401
import threading  # noqa: F401

import cocaine.core.protocol  # noqa: F401
import cocaine.python.request  # noqa: F401
from cocaine.python import logs
from cocaine.python.loader import die_with_parent, load_module

EXIT_LOAD_FAILED = 3
_CLONE_PARENT = 0x00008000
_SIGCHLD = 17
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


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


#: The server's name in ps and /proc/PID/comm; its workers take back the interpreter's.
SERVER_NAME = b"cocaine-forksrv"
_PR_SET_NAME = 15


def set_name(name: bytes) -> None:
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run_worker(control: socket.socket, fds: list[int], request: dict, args, module, forwarder,
               printed: tuple[bytes, bytes], name: bytes) -> int:
    """In a forked child: become the worker ``request`` asks for; returns its exit status."""
    os.setsid()  # its own session, like a worker the daemon starts itself
    set_name(name)
    die_with_parent()  # the parent is the daemon (CLONE_PARENT)
    control.close()
    for target, fd, data in zip((1, 2), fds, printed):
        os.dup2(fd, target)
        os.close(fd)
        if data:
            _write_all(target, data)
    os.environ.update(request.get("env") or {})
    import zmq  # only now: no ZeroMQ code ran before the fork

    from cocaine.python.worker import serve

    context = zmq.Context()
    try:
        return serve(context, endpoint=args.endpoint, worker_id=request["id"], path=args.path,
                     heartbeat=args.heartbeat, own_process=True, module=module, forwarder=forwarder)
    finally:
        context.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    args = parser.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when its workers stop
    control = socket.socket(fileno=args.control_fd)
    with open("/proc/self/comm", "rb") as f:
        interpreter_name = f.read().strip()
    set_name(SERVER_NAME)
    sys.stdout.reconfigure(line_buffering=True)  # inherited by the workers: each line leaves at once
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
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 65536, 2)
        except OSError:
            return 0
        if not message:
            return 0  # the daemon closed the control socket: this generation is over
        try:
            request = json.loads(message)
            if len(fds) != 2:
                raise ValueError(f"expected 2 descriptors (stdout, stderr), got {len(fds)}")
            pid = fork_sibling()
        except (OSError, ValueError) as e:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": str(e)}).encode())
            continue
        if pid == 0:
            return run_worker(control, fds, request, args, module, forwarder, tuple(printed), interpreter_name)
        for fd in fds:
            os.close(fd)
        control.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    sys.exit(main())
