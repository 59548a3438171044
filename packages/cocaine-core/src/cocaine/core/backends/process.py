"""The ``process`` backend: every worker is a process of its own, never a bare fork of the daemon,
since a ZeroMQ context does not survive ``fork()``. A worker is forked by the app's fork server when
its language has one (forkserver.py), else started fresh (fork + exec)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import TYPE_CHECKING

from cocaine.core.backends import Backend, WorkerHandle
from cocaine.core.backends.forkserver import ForkServer
from cocaine.core.languages import WorkerSpec

if TYPE_CHECKING:
    from cocaine.core.languages import Language
    from cocaine.core.manifest import EngineConfig


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


#: The most spares a fork server keeps (fewer when ``pool-limit`` is lower): a burst's first workers
#: each take one instead of waiting for a fork (docs/pools.md, "The fork server").
MAX_SPARES = 2


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, zmq_context) -> None:
        super().__init__(zmq_context)
        self.fork_server: ForkServer | None = None

    def open(self, language: Language, *, app: str, endpoint: str, heartbeat_interval: float,
             config: EngineConfig) -> None:
        argv = language.fork_server_argv(app=app, endpoint=endpoint, heartbeat_interval=heartbeat_interval)
        if argv is not None and config.fork_server:
            self.fork_server = ForkServer(app, argv, spares=min(config.pool_limit, MAX_SPARES))
            self.fork_server.start()

    def close(self) -> None:
        if self.fork_server is not None:
            self.fork_server.close()

    def info(self) -> dict | None:
        return self.fork_server.info() if self.fork_server is not None else None

    def spawn(self, spec: WorkerSpec) -> WorkerHandle:
        result = self.spawn_many([spec])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def spawn_many(self, specs: list[WorkerSpec]) -> list[WorkerHandle | Exception]:
        forked: list[WorkerHandle | None] = [None] * len(specs)
        if self.fork_server is not None:
            forked = self.fork_server.spawn([(spec.worker_id, spec.env, spec.link) for spec in specs])
        results: list[WorkerHandle | Exception] = []
        for spec, fork in zip(specs, forked):
            try:
                results.append(fork if fork is not None else self._exec(spec))
            except Exception as e:  # noqa: BLE001 - reported per worker, as spawn() raising is
                results.append(e)
        return results

    def _exec(self, spec: WorkerSpec) -> ProcessHandle:
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
            pass_fds=() if spec.link is None else (spec.link.fileno(),),  # its stream link, named in argv
        )
        return ProcessHandle(proc)
