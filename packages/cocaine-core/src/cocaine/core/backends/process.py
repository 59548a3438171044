"""The ``process`` backend: every worker is a fresh process (fork + exec, never a bare fork, since a
ZeroMQ context does not survive ``fork()``)."""

from __future__ import annotations

import os
import signal
import subprocess

from cocaine.core.backends import Backend, WorkerHandle
from cocaine.core.languages import WorkerSpec


class ProcessHandle(WorkerHandle):
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.pid = proc.pid
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def exit_fd(self) -> int | None:
        return self._pidfd

    def output_fds(self) -> dict[str, int]:
        # Handed over: the caller reads and closes them (the pipes' file objects are closed here).
        fds = {}
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            if pipe is not None:
                fds[name] = os.dup(pipe.fileno())
                pipe.close()
        self.proc.stdout = self.proc.stderr = None
        return fds

    def returncode(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.proc.poll()
        for pipe in (self.proc.stdout, self.proc.stderr):  # unless output_fds() took them
            if pipe is not None:
                pipe.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class ProcessBackend(Backend):
    name = "process"

    def spawn(self, spec: WorkerSpec) -> ProcessHandle:
        env = dict(os.environ, **spec.env)
        env["COCAINE_PARENT_PID"] = str(os.getpid())
        proc = subprocess.Popen(
            spec.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            # Read by the engine line by line, and logged and published as the worker's (monitor.py).
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C at the daemon's terminal is the daemon's to handle.
            start_new_session=True,
            close_fds=True,
        )
        return ProcessHandle(proc)
