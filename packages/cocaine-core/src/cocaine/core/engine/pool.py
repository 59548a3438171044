"""The worker pool of one engine: starting workers, talking to them, noticing when they die.

Workers connect a DEALER to the pool's ROUTER (ipc). Outgoing protocol messages are queued per
worker and flushed once per reactor round, so a burst of requests costs one send per worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import TYPE_CHECKING

import zmq

from cocaine.core import protocol
from cocaine.core.backends import Backend, WorkerHandle
from cocaine.core.errors import Code, ProtocolError
from cocaine.core.languages import Language
from cocaine.core.transport import NOBLOCK, send_frames

if TYPE_CHECKING:
    from cocaine.core.engine.engine import Engine
    from cocaine.core.engine.job import Job

log = logging.getLogger(__name__)


class Worker:
    __slots__ = ("id", "identity", "handle", "jobs", "ready", "last_seen", "spawned_at", "last_error")

    def __init__(self, worker_id: str, handle: WorkerHandle) -> None:
        self.id = worker_id
        self.identity = worker_id.encode()
        self.handle = handle
        self.jobs: dict[int, Job] = {}
        self.ready = False  # said hello
        self.spawned_at = self.last_seen = time.monotonic()
        self.last_error: str | None = None  # the last error the worker logged (a failed import, say)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is gone"
    if returncode < 0:
        try:
            import signal

            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class WorkerPool:
    def __init__(self, engine: Engine, language: Language, backend: Backend, runtime_dir: str) -> None:
        self.engine = engine
        self.app = engine.app
        self.config = engine.manifest.engine
        self.language = language
        self.backend = backend
        self.reactor = engine.reactor
        self.workers: dict[bytes, Worker] = {}
        self.outbox: dict[Worker, list] = {}
        self.dying: list[WorkerHandle] = []
        self.spawned = 0
        self.spawn_failures = 0
        self._ids = itertools.count(1)
        self.heartbeat_interval = min(5.0, self.config.heartbeat_timeout / 3)

        self.endpoint = f"ipc://{runtime_dir}/{self.app}.{os.getpid()}.{id(self):x}.sock"
        if len(self.endpoint) - len("ipc://") > 100:
            raise OSError(f"runtime folder {runtime_dir!r} is too long for an ipc socket path")
        self.sock = engine.zmq_context.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.router_mandatory = True  # a send to a vanished worker raises instead of vanishing
        self.sock.sndhwm = self.sock.rcvhwm = 0
        self.sock.bind(self.endpoint)
        self.reactor.add_reader(self.sock, self._on_readable)
        self.reactor.add_flusher(self.flush)
        self._tick = self.reactor.call_later(self.heartbeat_interval, self._check)

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return len(self.workers)

    def busy(self) -> int:
        return sum(1 for w in self.workers.values() if w.jobs)

    def starting(self) -> int:
        return sum(1 for w in self.workers.values() if not w.ready)

    def least_loaded(self) -> Worker | None:
        """A ready worker with free credit, the one with the fewest jobs (so idle workers go first)."""
        best = None
        best_load = self.config.concurrency
        for worker in self.workers.values():
            load = len(worker.jobs)
            if load < best_load and worker.ready:
                best, best_load = worker, load
                if load == 0:
                    break
        return best

    # -- growing ----------------------------------------------------------------------------------
    def grow(self, waiting: int) -> None:
        """Start workers for ``waiting`` queued jobs, counting the capacity of those already starting."""
        concurrency = self.config.concurrency
        while self.total < self.config.pool_limit and self.starting() * concurrency < waiting:
            if not self.spawn():
                break

    def spawn(self) -> bool:
        worker_id = f"{self.app}.{os.getpid()}.{next(self._ids)}"
        spec = self.language.worker_spec(app=self.app, worker_id=worker_id, endpoint=self.endpoint,
                                         heartbeat_interval=self.heartbeat_interval)
        try:
            handle = self.backend.spawn(spec)
        except Exception as e:  # noqa: BLE001 - a failed spawn must never take the daemon down
            self.spawn_failures += 1
            log.error("app %s: cannot start a worker: %s", self.app, e)
            self.engine.on_spawn_failed(f"cannot start a worker: {e}")
            return False
        worker = Worker(worker_id, handle)
        self.workers[worker.identity] = worker
        self.spawned += 1
        fd = handle.exit_fd()
        if fd is not None:
            self.reactor.add_reader(fd, lambda: self._on_exit(worker))
        log.info("app %s: worker %s started (pid %s)", self.app, worker_id, handle.pid)
        return True

    # -- sending ----------------------------------------------------------------------------------
    def assign(self, worker: Worker, job: Job) -> None:
        job.worker = worker
        worker.jobs[job.id] = job
        handle = job.handle
        closed = True if handle is None else handle.dispatching()
        self._send(worker, protocol.invoke(job.id, job.task, job.meta, job.body, closed))

    def send_to(self, worker: Worker, frame: bytes) -> None:
        """Queue one protocol message for ``worker``; it leaves with this reactor round's batch."""
        self._send(worker, frame)

    def _send(self, worker: Worker, frame: bytes) -> None:
        frames = self.outbox.get(worker)
        if frames is None:
            self.outbox[worker] = [worker.identity, frame]
        else:
            frames.append(frame)

    def flush(self) -> None:
        if not self.outbox:
            return
        outbox, self.outbox = self.outbox, {}
        for worker, frames in outbox.items():
            try:
                send_frames(self.sock, frames, NOBLOCK)
            except zmq.ZMQError as e:
                # Not connected yet or gone: the exit watcher answers its jobs.
                log.warning("app %s: cannot reach worker %s: %s", self.app, worker.id, e.strerror)

    # -- receiving --------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        recv = self.sock.recv_multipart
        workers = self.workers
        now = time.monotonic()
        finished = False
        while True:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            worker = workers.get(frames[0])
            if worker is None:
                continue  # a worker we already gave up on
            worker.last_seen = now
            for frame in frames[1:]:
                try:
                    message = protocol.unpack(frame)
                    finished |= self._handle(worker, message)
                except (ProtocolError, IndexError, TypeError, ValueError) as e:
                    log.warning("app %s: worker %s sent a bad message: %s", self.app, worker.id, e)
        if finished:
            self.engine.dispatch()

    def _handle(self, worker: Worker, message: list) -> bool:
        """Apply one message; True if it freed credit or a worker (so queued jobs may go)."""
        kind = message[0]
        if kind == protocol.CHUNK:
            job = worker.jobs.get(message[1])
            if job is not None:
                job.chunk(message[2])
            return False
        if kind == protocol.END:
            job = worker.jobs.pop(message[1], None)
            if job is not None:
                job.end()
            return True
        if kind == protocol.ERROR:
            job = worker.jobs.pop(message[1], None)
            if job is not None:
                job.fail(message[2], message[3])
            return True
        if kind == protocol.CREDIT:
            job = worker.jobs.get(message[1])
            if job is not None and job.handle is not None:
                job.handle.credited(message[2])
            return False
        if kind == protocol.HELLO:
            if message[1] != protocol.VERSION:
                self.retire(worker, Code.SERVER, f"speaks protocol version {message[1]}, not {protocol.VERSION}")
                return False
            worker.ready = True
            self.engine.on_worker_ready()
            return True
        if kind == protocol.HEARTBEAT:
            return False
        if kind == protocol.LOG:
            level, text = message[1], message[2]
            if level >= logging.ERROR:
                worker.last_error = text
            log.log(level, "app %s: worker %s: %s", self.app, worker.id, text)
            return False
        raise ProtocolError(f"unknown message type {kind}")

    # -- liveness ---------------------------------------------------------------------------------
    def _check(self) -> None:
        now = time.monotonic()
        timeout = self.config.heartbeat_timeout
        for worker in list(self.workers.values()):
            if worker.handle.exit_fd() is None and worker.handle.returncode() is not None:
                self._on_exit(worker)
            elif now - worker.last_seen > timeout:
                self.retire(worker, Code.TIMEOUT, f"did not answer within heartbeat-timeout ({timeout:g} s)")
            elif worker.ready:
                self._send(worker, protocol.HEARTBEAT_FRAME)
        self._reap()
        self._tick = self.reactor.call_later(self.heartbeat_interval, self._check)

    def _on_exit(self, worker: Worker) -> None:
        # Read what it said before dying (a failed import's reason) before giving up on it.
        self._on_readable()
        if self.workers.get(worker.identity) is worker:
            self.retire(worker, Code.SERVER, describe_exit(worker.handle.returncode()))
        self._reap()

    def retire(self, worker: Worker, code: int, reason: str) -> None:
        """Forget a worker: kill it, answer its jobs with an error, let the engine replace it."""
        if self.workers.pop(worker.identity, None) is None:
            return
        was_ready = worker.ready
        handle = worker.handle
        handle.kill()
        fd = handle.exit_fd()
        if fd is not None:
            self.reactor.remove_reader(fd)
        self.dying.append(handle)
        self.outbox.pop(worker, None)
        log.warning("app %s: worker %s %s", self.app, worker.id, reason)
        jobs, worker.jobs = worker.jobs, {}
        for job in jobs.values():
            job.fail(code, f"worker {reason}")
        if not was_ready:
            detail = f": {worker.last_error}" if worker.last_error else ""
            self.engine.on_spawn_failed(f"worker {reason} before it was ready{detail}")
        else:
            self.engine.dispatch()

    def _reap(self) -> None:
        alive = []
        for handle in self.dying:
            if handle.returncode() is None:
                alive.append(handle)
            else:
                handle.close()
        self.dying = alive

    # -- stopping ---------------------------------------------------------------------------------
    def stop(self, timeout: float) -> None:
        """Ask every worker to exit, kill those still running after ``timeout``; blocks the reactor."""
        self._tick.cancel()
        for worker in self.workers.values():
            if worker.ready:
                self._send(worker, protocol.terminate("engine stopping"))
            else:  # still starting: it has no job, and it may not be connected to hear us
                worker.handle.kill()
        self.flush()
        handles = [w.handle for w in self.workers.values()] + self.dying
        deadline = time.monotonic() + timeout
        for handle in handles:
            if not handle.wait(max(0.0, deadline - time.monotonic())):
                handle.kill()
                handle.wait(5.0)
            fd = handle.exit_fd()
            if fd is not None:
                self.reactor.remove_reader(fd)
            handle.close()
        self.workers.clear()
        self.dying = []
        self.reactor.remove_reader(self.sock)
        self.sock.close(0)
        path = self.endpoint[len("ipc://"):]
        try:
            os.unlink(path)
        except OSError:
            pass

