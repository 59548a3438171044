"""Stand-ins for what a WorkerPool is given, to test its rules without processes or threads: a clock
the test moves, a reactor run by hand on that clock, an in-memory backend whose workers are DEALER
sockets the test speaks for, and a listener that records what the pool reports.

The pool itself, its ROUTER socket (inproc) and the worker protocol are the real ones."""

from __future__ import annotations

import heapq
import itertools
import os
import select

import zmq

from cocaine.core import worker_protocol
from cocaine.core.engine.job import Job
from cocaine.core.engine.pool import WorkerPool
from cocaine.core.engine.stats import TaskStats
from cocaine.core.manifest import EngineConfig
from cocaine.core.plugin_api import Backend, Language, WorkerHandle, WorkerSpec


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualReactor:
    """The pool's reactor interface; timers fire only when the test advances the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.readers: dict = {}
        self.flushers: list = []
        self._timers: list = []
        self._order = itertools.count()

    def add_reader(self, source, callback) -> None:
        self.readers[source] = callback

    def remove_reader(self, source) -> None:
        self.readers.pop(source, None)

    def add_flusher(self, callback, *, last: bool = False) -> None:
        self.flushers.append(callback)

    def remove_flusher(self, callback) -> None:
        self.flushers.remove(callback)

    def call_later(self, delay: float, callback, *args) -> Timer:
        return self.call_at(self.clock() + delay, callback, *args)

    def call_at(self, when: float, callback, *args) -> Timer:
        timer = Timer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback, args))
        return timer

    def round(self) -> None:
        """One reactor round: due timers, readable sockets, then the flushers."""
        while self._timers and self._timers[0][0] <= self.clock():
            _, _, timer, callback, args = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback(*args)
        # Like the real reactor: poll everything, then call each reader still registered.
        readable = [source for source in self.readers
                    if (source.poll(0) if hasattr(source, "poll") else select.select([source], [], [], 0)[0])]
        for source in readable:
            callback = self.readers.get(source)
            if callback is not None:
                callback()
        for flush in list(self.flushers):
            flush()

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Move the clock forward in steps, running a round after each."""
        end = self.clock() + seconds
        while self.clock() < end:
            self.clock.now = min(end, self.clock() + step)
            self.round()
        self.round()


class MemoryHandle(WorkerHandle):
    def __init__(self, worker: MemoryWorker) -> None:
        self.worker = worker
        self.code: int | None = None

    def returncode(self) -> int | None:
        return self.code

    def wait(self, timeout: float) -> bool:
        return self.code is not None

    def kill(self) -> None:
        if self.code is None:
            self.code = -9

    def close(self) -> None:
        self.worker.sock.close(0)


class LateHandle(MemoryHandle):
    """A handle returned before its backend knows the worker started, as a fork server's is: its
    ``start_fd`` (a pipe the test writes to with ``answer``) says when ``confirm`` can tell."""

    def __init__(self, worker: MemoryWorker) -> None:
        super().__init__(worker)
        self.pid = None
        self._read, self._write = os.pipe()
        self.answered: int | str | None = None  # a pid, or why it never started

    def answer(self, outcome: int | str) -> None:
        self.answered = outcome
        os.write(self._write, b"x")

    def start_fd(self) -> int | None:
        return self._read if self._read is not None else None

    def confirm(self) -> None:
        if self._read is None:
            return
        for fd in (self._read, self._write):
            os.close(fd)
        self._read = None
        if isinstance(self.answered, str):
            self.code = 127
            raise OSError(self.answered)
        self.pid = self.answered


class MemoryWorker:
    """The worker's end, spoken by the test: a DEALER connected to the pool."""

    def __init__(self, context: zmq.Context, spec: WorkerSpec, late: bool = False) -> None:
        self.id = spec.worker_id
        self.sock = context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.identity = spec.worker_id.encode()
        self.sock.routing_id = self.identity
        self.sock.connect(spec.endpoint)
        self.handle = LateHandle(self) if late else MemoryHandle(self)

    def send(self, *messages: bytes) -> None:
        self.sock.send_multipart(list(messages))

    def hello(self) -> None:
        self.send(worker_protocol.pack([worker_protocol.HELLO, worker_protocol.VERSION, 0]))

    def heartbeat(self) -> None:
        self.send(worker_protocol.HEARTBEAT_FRAME)

    def received(self) -> list[list]:
        messages = []
        while self.sock.poll(0):
            messages += [worker_protocol.unpack(frame) for frame in self.sock.recv_multipart()]
        return messages

    def exit(self, code: int = 0) -> None:
        self.handle.code = code


class MemoryBackend(Backend):
    name = "memory"
    transport = "inproc"

    def __init__(self, zmq_context: zmq.Context) -> None:
        super().__init__(zmq_context)
        self.workers: list[MemoryWorker] = []
        self.attempts = 0
        self.failing = False
        self.late = False  # hand out LateHandles, confirmed when the test answers for them

    def spawn(self, spec: WorkerSpec) -> WorkerHandle:
        self.attempts += 1
        if self.failing:
            raise OSError("no room for a worker")
        worker = MemoryWorker(self.zmq_context, spec, self.late)
        self.workers.append(worker)
        return worker.handle


class NoLanguage(Language):
    name = "none"

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=[])


class ConcurrentLanguage(NoLanguage):
    """One whose workers run the jobs they hold at the same time, as JavaScript's do."""

    runs_jobs_concurrently = True


class Recorder:
    """A PoolListener that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.waiting = 0  # what it answers to ``queued``: the jobs a test has the engine's queue hold

    def worker_spawned(self, pool, worker) -> None:
        self.events.append(("spawned", worker.id))

    def worker_ready(self, pool, worker) -> None:
        self.events.append(("ready", worker.id))

    def worker_exited(self, pool, worker, description) -> None:
        self.events.append(("exited", worker.id, worker.exit_reason))

    def worker_log(self, worker_id, level, message, stream="log") -> None:
        self.events.append(("log", worker_id, message))

    def capacity_freed(self, pool) -> None:
        self.events.append(("capacity",))

    def queued(self, pool) -> int:
        return self.waiting

    def handed_back(self, pool, jobs) -> None:
        self.events.append(("handed-back", [job.id for job in jobs]))

    def start_failed(self, pool, reason, attempt, retry_in) -> None:
        self.events.append(("start-failed", reason, attempt, retry_in))

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]


class Answers:
    """A responder that keeps the final answer."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.final: tuple | None = None

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def end(self) -> None:
        self.final = ("end",)

    def error(self, code: int, message: str) -> None:
        self.final = ("error", code, message)


class PoolRig:
    """A WorkerPool on the doubles above; ``rig.clock`` moves time, ``rig.reactor.round()`` runs a round."""

    def __init__(self, context: zmq.Context, runtime_dir: str, concurrent: bool = False, **config) -> None:
        self.clock = Clock()
        self.reactor = ManualReactor(self.clock)
        self.backend = MemoryBackend(context)
        self.listener = Recorder()
        self.stats = TaskStats()
        self._job_ids = itertools.count(1)
        language = ConcurrentLanguage(None) if concurrent else NoLanguage(None)
        self.idle_cores = 0.0  # the machine's, as the pool reads them: none to spare unless a test says so
        self.pool = WorkerPool(EngineConfig(**config), language, self.backend, app="app", generation=1,
                               reactor=self.reactor, zmq_context=context, runtime_dir=runtime_dir,
                               listener=self.listener, clock=self.clock, idle_cpu=lambda: self.idle_cores)

    def ready_worker(self) -> MemoryWorker:
        """Start one more worker and let it say hello."""
        assert self.pool.spawn()
        worker = self.backend.workers[-1]
        worker.hello()
        self.reactor.round()
        assert worker.received() == [[worker_protocol.OPTIONS, {"handback-after": 0.1, "reply": True}]]  # to hello
        return worker

    def job(self) -> tuple[Job, Answers]:
        answers = Answers()
        return Job(next(self._job_ids), "task", b"body", {}, answers, self.stats), answers

    def pooled(self, worker: MemoryWorker):
        return self.pool.workers.get(worker.identity) or self.pool.exiting.get(worker.identity)

    def close(self) -> None:
        self.pool.close(0, lambda: None)
        self.reactor.advance(0.1)
        for worker in self.backend.workers:
            worker.sock.close(0)
