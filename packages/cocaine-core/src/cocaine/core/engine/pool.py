"""The worker pool of one engine generation: starting workers, talking to them, retiring them.

Workers connect a DEALER to the pool's ROUTER, or, when their language can, each gets a stream link
of its own (stream_link.py). Outgoing protocol messages are queued per worker and flushed once per
reactor round, so a burst of requests costs one send per worker. The pool never blocks the reactor:
stopping is a terminate message, exit notifications and a kill timer.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import zmq

from cocaine.core import worker_protocol
from cocaine.core.backends import Backend, WorkerHandle
from cocaine.core.engine import exits
from cocaine.core.engine.exits import describe_exit
from cocaine.core.engine.idle_cpu import IDLE_CPU
from cocaine.core.engine.output import READER, OutputReader, OutputWatch
from cocaine.core.engine.stream_link import StreamLink
from cocaine.core.errors import Code, ProtocolError
from cocaine.core.languages import Language, WorkerSpec
from cocaine.core.manifest import EngineConfig
from cocaine.core.transport import NOBLOCK, recv_frames, send_frames
from cocaine.core.worker_protocol import END, ERROR, HANDBACK, REPLY, validate

if TYPE_CHECKING:
    from cocaine.core.engine.job import Job
    from cocaine.core.engine.reactor import Reactor

log = logging.getLogger(__name__)

#: A worker whose oldest job has run this long gets no more jobs while it could hold them hostage.
STALL_AFTER = 0.1
#: Sent after a worker's hello: a worker whose running job has run this long hands back the jobs it
#: has not started (docs/pools.md), the same as STALL_AFTER, from when the worker gets no new jobs;
#: and it may send a response of one chunk as one ``reply`` message rather than ``chunk`` and ``end``.
OPTIONS_FRAME = worker_protocol.options(STALL_AFTER, reply=True)
#: The pool's horizon, by its job time. A worker is given no more jobs than it is expected to finish
#: in this long (its credit, within ``concurrency``), and the pool keeps as many workers as it takes
#: to finish in this long the jobs they hold and those waiting (its target, within ``pool-limit``).
#: Quick jobs go deep on few workers; slow ones wait in the engine's queue, where any worker can take
#: them and where they make the pool grow.
HORIZON = 0.01
#: Idle cores (those the daemon could use, idle_cpu.py) from which the pool grows past its target:
#: room for one more worker.
SPARE_CPU = 1.0
#: Answers set the target at most this often: it sums the jobs of every worker, and under load
#: a worker's answers come one message each.
AIM_EVERY = 0.001
#: Each answer's time counts this much in the pool's job time (a moving average).
JOB_TIME_WEIGHT = 0.25
#: An answer that took longer counts as this long, so that one long stream does not keep the pool
#: shallow for the many quick jobs after it.
JOB_TIME_CAP = 2 * STALL_AFTER
#: Spawn retries after failed starts back off exponentially from BACKOFF_FIRST up to BACKOFF_MAX.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: An unpaced response is granted back to its worker in steps of this many bytes.
GRANT_EVERY = worker_protocol.RESPONSE_WINDOW // 2

_pool_numbers = itertools.count(1)


class PooledWorker:
    """The engine's record of one worker of a pool (the worker itself runs elsewhere)."""

    __slots__ = ("id", "identity", "handle", "jobs", "ready", "last_seen", "answered_at", "spawned_at", "idle_since",
                 "last_error", "retiring", "exit_reason", "output", "link")

    def __init__(self, worker_id: str, handle: WorkerHandle, now: float) -> None:
        self.id = worker_id
        self.identity = worker_id.encode()
        self.handle = handle
        self.jobs: dict[int, Job] = {}  # in the order they were sent: the first is the running one
        self.ready = False  # said hello
        self.spawned_at = self.last_seen = self.idle_since = now
        # When it last finished a job: the job it runs now started no earlier, nor before it was sent.
        self.answered_at = now
        self.last_error: str | None = None  # the last error the worker logged (a failed import, say)
        self.retiring: str | None = None  # why it was asked to exit, once it was
        self.exit_reason: str | None = None  # one of the exits module's reasons, once it is on its way out
        self.output: OutputWatch | None = None  # its stdout and stderr, for a process
        self.link: StreamLink | None = None  # its stream link, or None over the pool's ROUTER


#: ask_to_exit's reasons as the exit reasons that monitoring reports.
EXIT_REASONS = {"idle": exits.IDLE, "reload": exits.RELOAD, "engine stopping": exits.STOPPING}
#: The level of a line a worker writes, by stream: an interpreter's dying traceback or a native
#: library's complaint on stderr is captured even when the runtime cannot speak any more.
OUTPUT_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}


class PoolListener(Protocol):
    """What a pool tells its owner (the engine). Called on the reactor thread."""

    def worker_spawned(self, pool: WorkerPool, worker: PooledWorker) -> None: ...

    def worker_ready(self, pool: WorkerPool, worker: PooledWorker) -> None: ...

    def worker_exited(self, pool: WorkerPool, worker: PooledWorker, description: str) -> None: ...

    def worker_log(self, worker_id: str, level: int, message: str, stream: str = "log") -> None:
        """A ``log`` message from a worker (``stream`` "log"), or a line of its stdout or stderr."""

    def capacity_freed(self, pool: WorkerPool) -> None:
        """Credit was freed or a worker lost: queued jobs may go, a drained pool may close."""

    def handed_back(self, pool: WorkerPool, jobs: list[Job]) -> None:
        """A worker gave back ``jobs``, in their order, never started: they are to run elsewhere."""

    def start_failed(self, pool: WorkerPool, reason: str, attempt: int, retry_in: float) -> None: ...

    def queued(self, pool: WorkerPool) -> int:
        """Jobs waiting for ``pool``'s workers in the owner's queue."""


class WorkerPool:
    """The workers of one generation. Its inputs are explicit: the ``reactor`` it runs on (timers
    and readers), the ``clock`` (monotonic seconds; every time rule reads it), the ZeroMQ context,
    the folder for ipc sockets, and the ``listener`` it reports to."""

    def __init__(self, config: EngineConfig, language: Language, backend: Backend, *, app: str, generation: int,
                 reactor: Reactor, zmq_context: zmq.Context, runtime_dir: str, listener: PoolListener,
                 clock: Callable[[], float] = time.monotonic, output_reader: OutputReader = READER,
                 idle_cpu: Callable[[], float] = IDLE_CPU) -> None:
        self.app = app
        self.config = config
        self.language = language
        self.backend = backend
        self.generation = generation
        self.reactor = reactor
        self.listener = listener
        self.clock = clock
        self.output_reader = output_reader
        self.idle_cpu = idle_cpu
        self.workers: dict[bytes, PooledWorker] = {}
        self.unready = 0  # of the workers, those that have not said hello yet
        # Jobs a ready worker may hold: ``concurrency`` until the job time says fewer (_timed).
        self.credit = config.concurrency
        self.timed = not language.runs_jobs_concurrently
        self.job_time: float | None = None  # seconds of a worker's time per job answered, smoothed
        # Ready workers that take jobs, the first ones: those the work needs by the job time (_aim).
        # The others get none and retire when idle-timeout ends. None: all (the job time is unknown).
        self.target: int | None = None
        self._aimed_at = float("-inf")  # when an answer last set the target
        self.outbox: dict[PooledWorker, list] = {}
        self.exiting: dict[bytes, PooledWorker] = {}  # told to exit or killed, not yet gone
        self.spawned = 0
        self.spawn_failures = 0
        self.failed_in_a_row = 0
        self.retry_at = 0.0  # no spawn before this (monotonic) while starts keep failing
        self.broken_reason: str | None = None
        self.closing = False
        self._on_closed: Callable[[], None] | None = None
        self._ids = itertools.count(1)
        self.heartbeat_interval = min(5.0, config.heartbeat_timeout / 3)
        self._heartbeat_due = 0.0

        self.released = False  # closed: its workers and sockets are gone
        self.stream_links = language.stream_link
        self.sock: zmq.Socket | None = None  # the ROUTER workers connect to, unless they have stream links
        if self.stream_links:
            self.endpoint = "fd"  # each worker is handed a link of its own (_spec)
        else:
            self.endpoint = self._bind(zmq_context, backend.transport, runtime_dir)
            self.reactor.add_reader(self.sock, self._on_readable)
        backend.open(language, app=self.app, endpoint=self.endpoint, heartbeat_interval=self.heartbeat_interval,
                     config=config)
        self.reactor.add_flusher(self.flush, last=True)  # after the drivers', whose writes grant credit
        self._tick = self.reactor.call_later(0, self._check)

    def _bind(self, zmq_context: zmq.Context, transport: str, runtime_dir: str) -> str:
        """Bind the ROUTER that workers without stream links connect to; its endpoint."""
        # Short, since an ipc path must fit in 107 bytes; unique per daemon process and pool.
        stem = f"{os.getpid():x}-{next(_pool_numbers)}"
        if transport == "inproc":
            endpoint = f"inproc://cocaine-{stem}"
        else:
            endpoint = f"ipc://{runtime_dir}/{stem}.sock"
            if len(endpoint) - len("ipc://") > 107:
                raise OSError(f"runtime folder {runtime_dir!r} is too long for an ipc socket path")
        sock = self.sock = zmq_context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.router_mandatory = True  # a send to a vanished worker raises instead of vanishing
        sock.sndhwm = sock.rcvhwm = 0
        sock.bind(endpoint)
        return endpoint

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return len(self.workers)

    def busy(self) -> int:
        return sum(1 for w in self.workers.values() if w.jobs)

    def starting(self) -> int:
        return self.unready

    def stalled(self) -> int:
        """Workers whose running job has taken longer than STALL_AFTER (they get no new jobs)."""
        before = self.clock() - STALL_AFTER
        return sum(1 for w in self.workers.values() if w.jobs and self._running_since(w) < before)

    def running_jobs(self) -> int:
        return sum(len(w.jobs) for w in self.workers.values()) + sum(len(w.jobs) for w in self.exiting.values())

    def least_loaded(self, waiting: int = 0) -> PooledWorker | None:
        """The ready worker with the most free credit, idle ones first. A worker stuck on a long job
        gets nothing more, so no queued job waits behind it while the engine could wait for another.
        While workers are starting, a ready one takes no more than its share of the ``waiting`` jobs
        (and of those the ready ones hold): a burst is spread over every worker being started rather
        than piled on the first to say hello, where it would stay."""
        limit = self.credit if not (self.unready and waiting) else self._share(waiting)
        best = None
        best_load = limit
        room = self.target or len(self.workers)
        for worker in self.workers.values():
            if worker.ready:
                load = len(worker.jobs)
                if load < best_load:
                    if not load:
                        return worker
                    best, best_load = worker, load
                room -= 1
                if not room:
                    break
        if best is None:
            return None
        # Only the pick is checked for a stall, unless it is stalled: then any worker beyond the
        # target may take the job too.
        stalled_before = self.clock() - STALL_AFTER
        if self._running_since(best) >= stalled_before:
            return best
        best = None
        best_load = limit
        for worker in self.workers.values():
            load = len(worker.jobs)
            if load < best_load and worker.ready:
                if not load:
                    return worker
                if self._running_since(worker) >= stalled_before:
                    best, best_load = worker, load
        return best

    @staticmethod
    def _running_since(worker: PooledWorker) -> float:
        """When a busy worker's running job started, as far as the engine knows: after it was sent,
        and after the worker's last answer (the jobs sent with it waited their turn)."""
        sent = next(iter(worker.jobs.values())).dispatched_at
        return sent if sent > worker.answered_at else worker.answered_at

    def _aim(self, waiting: int) -> int | None:
        """Set and return the target: the workers it takes to finish in HORIZON the jobs held and
        the ``waiting`` ones, by the job time (at least one, and at least ``pool-min``), and besides
        them every worker whose running job has already run longer than HORIZON (the job time does
        not know it yet). None while the job time is unknown, or while the machine has SPARE_CPU:
        then another worker can only help."""
        job_time = self.job_time
        if job_time is None or self.idle_cpu() >= SPARE_CPU:
            self.target = None
            return None
        held = occupied = 0
        before = self.clock() - HORIZON
        for worker in self.workers.values():
            if worker.jobs:
                held += len(worker.jobs)
                if self._running_since(worker) < before:
                    occupied += 1
        target = int((held + waiting) * job_time / HORIZON) + 1 + occupied
        if target < self.config.pool_min:
            target = self.config.pool_min  # warm workers are kept to work
        self.target = target
        return target

    def _share(self, waiting: int) -> int:
        """Jobs per worker if the ``waiting`` ones and those held were spread over every worker,
        ready or starting (workers that are starting hold none)."""
        held = sum(len(w.jobs) for w in self.workers.values())
        return min(self.credit, -(-(waiting + held) // max(1, len(self.workers))))

    def held_back(self) -> int:
        """Jobs that ``concurrency`` would let the ready workers hold and the job time keeps in the
        engine's queue instead (a shallower credit, workers beyond the target): the queue may be
        that much longer than ``queue-limit``."""
        ready = len(self.workers) - self.unready
        taking = ready if self.target is None or self.target > ready else self.target
        return self.config.concurrency * ready - self.credit * taking

    def _timed(self, since: float, now: float, answered: int) -> None:
        """A worker busy since ``since`` answered ``answered`` jobs by ``now``: the time per job it
        took joins the job time, and the credit follows. The jobs ran one after the other, so the
        time per answer is each job's (a batch of answers at once shares the time since the last).
        Jobs whose request was streamed to the worker are not counted: their time is the client's
        (a connection of a raw socket server lasts as long as its client wants)."""
        sample = (now - since) / answered
        if sample > JOB_TIME_CAP:
            sample = JOB_TIME_CAP
        job_time = self.job_time
        job_time = sample if job_time is None else job_time + JOB_TIME_WEIGHT * (sample - job_time)
        self.job_time = job_time
        # (the epsilon: two jobs of exactly half the horizon are two, whatever the float rounding)
        credit = int(HORIZON / job_time + 1e-6) if job_time > 0 else self.config.concurrency
        self.credit = max(1, min(self.config.concurrency, credit))
        if now - self._aimed_at >= AIM_EVERY:
            self._aimed_at = now
            self._aim(self.listener.queued(self))

    def all_busy(self) -> None:
        """A job goes to a worker that is already busy: no ready worker is idle. With a core to
        spare, start one more, so that a deep credit does not keep the work on fewer workers than
        the machine could run (the pool grows otherwise only for jobs that wait in the queue)."""
        if (self.job_time is not None and not self.unready and len(self.workers) < self.config.pool_limit
                and not self.closing and not self.backing_off() and self.idle_cpu() >= SPARE_CPU):
            self.spawn()

    def backing_off(self) -> bool:
        return self.broken_reason is not None and self.clock() < self.retry_at

    # -- growing ----------------------------------------------------------------------------------
    def grow(self, waiting: int, waited: float = 0.0) -> bool:
        """Start workers for ``waiting`` queued jobs (jobs no ready worker has room for), the oldest
        of them queued ``waited`` seconds ago: the first worker at once, then one more for every
        ``grow-threshold`` jobs waiting, counting those that the workers already starting will take.
        A burst's workers are started together. Once the job time is known, no more than the target
        (more would not finish the work sooner than HORIZON), unless a job has waited longer than
        that: then the job time is wrong (jobs of several tasks that differ), and every ready worker
        may take jobs until the next estimate. True if the target held jobs back (a start, or ready
        workers beyond it): the owner asks again once the oldest job has waited HORIZON."""
        if self.closing or self.backing_off():
            return False
        pool_limit = self.config.pool_limit
        if len(self.workers) >= pool_limit:  # the common case under load: decided in a few steps
            if self.target is None:
                return False
            if waited >= HORIZON:
                self.target = None  # every worker may take jobs until the next estimate
                return False
            return True  # the target may keep jobs from ready workers: ask again
        target = self._aim(waiting)
        if target is not None and waited >= HORIZON:
            target = self.target = None
        limit = pool_limit if target is None or target > pool_limit else target
        threshold = self.config.grow_threshold
        total, starting, count = self.total, self.starting(), 0
        while not total or (total < limit and waiting >= threshold * (starting + 1)):
            total, starting, count = total + 1, starting + 1, count + 1
        self.spawn(count)
        return total < pool_limit and waiting >= threshold * (starting + 1)

    def spawn(self, count: int = 1) -> bool:
        """Start ``count`` workers together; True if all of them started."""
        if count < 1:
            return True
        specs: list[WorkerSpec] = []
        ours: list[socket.socket | None] = []  # the engine's end of each worker's stream link
        try:
            for _ in range(count):
                spec, engine_end = self._spec(f"{self.app}.{os.getpid()}.{self.generation}.{next(self._ids)}")
                specs.append(spec)
                ours.append(engine_end)
            handles = self.backend.spawn_many(specs)
        except Exception as e:  # noqa: BLE001 - a failed spawn must never take the daemon down
            for sock in ours:
                if sock is not None:
                    sock.close()
            self._start_failed(f"cannot start a worker: {e}")
            return False
        finally:
            for spec in specs:  # the worker has its own copy (or, a thread, took it over: detached)
                if spec.link is not None:
                    spec.link.close()
        failure = None
        for spec, handle, engine_end in zip(specs, handles, ours):
            if isinstance(handle, Exception):
                failure = failure or handle
                if engine_end is not None:
                    engine_end.close()
            else:
                self._started(spec.worker_id, handle, engine_end)
        if failure is not None:
            self._start_failed(f"cannot start a worker: {failure}")
        return failure is None

    def _spec(self, worker_id: str) -> tuple[WorkerSpec, socket.socket | None]:
        """How to start one worker, and the engine's end of its stream link if its language has them."""
        if not self.stream_links:
            return self.language.worker_spec(app=self.app, worker_id=worker_id, endpoint=self.endpoint,
                                             heartbeat_interval=self.heartbeat_interval), None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            spec = self.language.worker_spec(app=self.app, worker_id=worker_id, endpoint=f"fd:{theirs.fileno()}",
                                             heartbeat_interval=self.heartbeat_interval)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        spec.link = theirs
        return spec, ours

    def _started(self, worker_id: str, handle: WorkerHandle, link: socket.socket | None) -> None:
        worker = PooledWorker(worker_id, handle, self.clock())
        self.workers[worker.identity] = worker
        self.unready += 1
        if link is not None:
            worker.link = StreamLink(link, self.reactor)
            worker.link.watch(lambda: self._on_link_readable(worker))
        self.spawned += 1
        fds = handle.output_fds()
        if fds:
            listener = self.listener
            worker.output = self.output_reader.watch(self.reactor, fds, lambda stream, line: listener.worker_log(
                worker_id, OUTPUT_LEVELS[stream], line, stream))
        fd = handle.start_fd()
        if fd is None:
            self._watch(worker)
        else:  # the backend answers later (a fork server): the engine goes on meanwhile
            self.reactor.add_reader(fd, lambda: self._on_confirmed(worker))

    def _watch(self, worker: PooledWorker) -> None:
        """The worker has started (its pid is known): watch for its exit, and say so."""
        handle = worker.handle
        fd = handle.exit_fd()
        if fd is not None:
            self.reactor.add_reader(fd, lambda: self._on_exit(worker))
        log.info("app %s: worker %s started%s", self.app, worker.id, f" (pid {handle.pid})" if handle.pid else "")
        self.listener.worker_spawned(self, worker)

    def _confirm(self, worker: PooledWorker) -> str | None:
        """Take the backend's answer on a worker's start if it is still to come (waiting for it if
        need be); why it never started, if it did not."""
        fd = worker.handle.start_fd()
        if fd is None:
            return None
        self.reactor.remove_reader(fd)
        try:
            worker.handle.confirm()
        except OSError as e:
            return str(e)
        self._watch(worker)
        return None

    def _on_confirmed(self, worker: PooledWorker) -> None:
        failure = self._confirm(worker)
        if failure is not None:
            self._replace(worker, failure)

    def _replace(self, worker: PooledWorker, failure: str) -> None:
        """The backend could not start this worker after all (its fork server went away first):
        it never ran, so it is no failed start of the app's; another is started at once (the
        backend starts it some other way)."""
        log.warning("app %s: worker %s %s; starting another", self.app, worker.id, failure)
        if not self._take_out(worker):
            return
        if worker.output is not None:
            worker.output.close()
        self._release(worker)
        if not self.closing:
            self.spawn()

    def _start_failed(self, reason: str) -> None:
        self.spawn_failures += 1
        self.failed_in_a_row += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failed_in_a_row - 1))
        self.retry_at = self.clock() + delay
        self.broken_reason = reason
        log.error("app %s: %s (next start attempt in %.1f s)", self.app, reason, delay)
        self.listener.start_failed(self, reason, self.failed_in_a_row, delay)

    # -- sending ----------------------------------------------------------------------------------
    def assign(self, worker: PooledWorker, job: Job) -> None:
        job.worker = worker
        job.dispatched_at = self.clock()
        worker.jobs[job.id] = job
        handle = job.handle
        closed = True if handle is None else handle.dispatching(self)
        meta = job.meta if job.deadline is None else job.worker_meta()
        # _send, inline: this runs for every job
        frame = worker_protocol.invoke(job.id, job.task, meta, job.body, closed)
        frames = self.outbox.get(worker)
        if frames is None:
            self.outbox[worker] = [worker.identity, frame]
        else:
            frames.append(frame)

    def send_to(self, worker: PooledWorker, frame: bytes) -> None:
        """Queue one protocol message for ``worker``; it leaves with this reactor round's batch."""
        self._send(worker, frame)

    def _send(self, worker: PooledWorker, frame: bytes) -> None:
        frames = self.outbox.get(worker)
        if frames is None:
            self.outbox[worker] = [worker.identity, frame]
        else:
            frames.append(frame)

    def flush(self) -> None:
        if not self.outbox:
            return
        if self.released:
            self.outbox.clear()
            return
        outbox, self.outbox = self.outbox, {}
        for worker, frames in outbox.items():
            link = worker.link
            if link is not None:
                link.send(frames, 1)  # without the ROUTER's identity frame
                continue
            try:
                send_frames(self.sock, frames, NOBLOCK)
            except zmq.ZMQError as e:
                # Not connected yet or gone: the exit watcher answers its jobs.
                log.warning("app %s: cannot reach worker %s: %s", self.app, worker.id, e.strerror)

    # -- receiving --------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        """The ROUTER's workers: each ZeroMQ message is the identity, then one message per frame."""
        sock = self.sock
        workers = self.workers
        now = self.clock()
        freed = False
        unpack = worker_protocol.unpack
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                break
            worker = workers.get(frames[0]) or self.exiting.get(frames[0])
            if worker is None:
                continue  # a worker already gone
            freed |= self._apply(worker, frames, 1, unpack, now)
        if freed:
            self.listener.capacity_freed(self)

    def _on_link_readable(self, worker: PooledWorker) -> None:
        link = worker.link
        if link is None or link.closed:
            return
        try:
            messages = link.receive()
        except ProtocolError as e:
            link.close()
            self.retire(worker, Code.SERVER, f"broke its stream link: {e}", cause=exits.PROTOCOL_ERROR)
            return
        # None: it closed its end, so it is exiting; its exit (watched apart) answers what it holds.
        if messages and self._apply(worker, messages, 0, validate, self.clock()):
            self.listener.capacity_freed(self)

    def _apply(self, worker: PooledWorker, messages: list, start: int, decode, now: float) -> bool:
        """Apply ``messages[start:]`` from ``worker``, each made a protocol message by ``decode``;
        True if one freed credit or a worker (so queued jobs may go)."""
        jobs = worker.jobs
        busy = bool(jobs)
        answered_at = worker.answered_at  # before these answers: the first of them ran since then
        answered = 0
        first_sent = 0.0
        freed = False
        for i in range(start, len(messages)):
            try:
                message = decode(messages[i])
                kind = message[0]
                if kind == REPLY:  # what most jobs end with: applied here, without a call
                    worker.last_seen = worker.answered_at = now
                    job = jobs.pop(message[1], None)
                    if job is not None:
                        handle = job.handle  # (the reply lets go of it)
                        job.reply(message[2])
                        if handle is None or not handle.streamed:
                            if not answered:
                                first_sent = job.dispatched_at
                            answered += 1
                    freed = True
                    continue
                # A handback comes from a worker's watchdog, not from the loop that runs its
                # handlers: it is no sign that a hung handler lives.
                if kind != HANDBACK:
                    worker.last_seen = now
                if kind == END or kind == ERROR:  # the end of a streamed response, or a failure
                    job = jobs.get(message[1])
                    if job is not None and (job.handle is None or not job.handle.streamed):
                        if not answered:
                            first_sent = job.dispatched_at
                        answered += 1
                freed |= self._handle(worker, message)
            except (ProtocolError, IndexError, TypeError, ValueError) as e:
                worker.last_seen = now
                log.warning("app %s: worker %s sent a bad message: %s", self.app, worker.id, e)
        if answered and self.timed:
            self._timed(first_sent if first_sent > answered_at else answered_at, now, answered)
        if busy and not jobs:  # idle from its last answer on; a heartbeat is not work
            worker.idle_since = now
        return freed

    def _handle(self, worker: PooledWorker, message: list) -> bool:
        """Apply one message; True if it freed credit or a worker (so queued jobs may go)."""
        kind = message[0]
        if kind == worker_protocol.CHUNK:
            job = worker.jobs.get(message[1])
            if job is not None:
                data = message[2]
                job.chunk(data)
                handle = job.handle
                if handle is None or not handle.paced or job.done:
                    # Nobody paces this response: grant it back as it arrives, half a window at a
                    # time, so that a small response costs no grant at all.
                    job.ungranted += len(data)
                    if job.ungranted >= GRANT_EVERY:
                        self._send(worker, worker_protocol.grant(job.id, job.ungranted))
                        job.ungranted = 0
            return False
        if kind == worker_protocol.END:
            worker.answered_at = worker.last_seen
            job = worker.jobs.pop(message[1], None)
            if job is not None:
                job.end()
            return True
        if kind == worker_protocol.ERROR:
            worker.answered_at = worker.last_seen
            job = worker.jobs.pop(message[1], None)
            if job is not None:
                job.fail(message[2], message[3])
            return True
        if kind == worker_protocol.META:
            job = worker.jobs.get(message[1])
            if job is not None:
                job.reply_meta(message[2])
            return False
        if kind == worker_protocol.CREDIT:
            job = worker.jobs.get(message[1])
            if job is not None and job.handle is not None:
                job.handle.credited(message[2])
            return False
        if kind == worker_protocol.HELLO:
            if message[1] != worker_protocol.VERSION:
                self.retire(worker, Code.SERVER, f"speaks protocol version {message[1]}, not {worker_protocol.VERSION}",
                            cause=exits.PROTOCOL_ERROR)
                return False
            failure = self._confirm(worker)  # its pid first: "spawned" comes before "ready"
            if failure is not None:
                self.retire(worker, Code.UNAVAILABLE, failure, cause=exits.STARTUP_FAILURE)
                return False
            if not worker.ready and self.workers.get(worker.identity) is worker:
                self.unready -= 1  # (a worker already given up on was counted out then)
            worker.ready = True
            self._send(worker, OPTIONS_FRAME)  # before any invoke: the batch keeps its order
            self.failed_in_a_row = 0
            self.broken_reason = None
            self.listener.worker_ready(self, worker)
            return True
        if kind == worker_protocol.HEARTBEAT:
            return False
        if kind == HANDBACK:
            return self._take_back(worker, message[1])
        if kind == worker_protocol.LOG:
            level, text = message[1], message[2]
            if level >= logging.ERROR:
                worker.last_error = text.partition("\n")[0]  # a traceback's summary comes first
            self.listener.worker_log(worker.id, level, text)
            return False
        log.warning("app %s: worker %s sent unknown message type %r", self.app, worker.id, kind)
        return False

    def _take_back(self, worker: PooledWorker, ids: list[int]) -> bool:
        """The worker dropped these jobs unstarted and will never run them (docs/protocol.md): they
        leave its credit and go back to the engine, to run elsewhere. A job already answered (its
        deadline passed, it was cancelled) only frees its credit."""
        jobs = []
        for job_id in ids:
            job = worker.jobs.pop(job_id, None)
            if job is None or job.done:
                continue
            handle = job.handle
            if handle is not None and handle.streamed:
                # Its request chunks went to this worker: they cannot be sent again. A worker never
                # hands such a job back; if one does, the job still gets its one answer.
                job.fail(Code.SERVER, f"worker {worker.id} handed back a streamed request")
                continue
            job.worker = None
            if handle is not None:
                handle.pool = None
            jobs.append(job)
        if jobs:
            log.debug("app %s: worker %s handed back %d jobs", self.app, worker.id, len(jobs))
            self.listener.handed_back(self, jobs)
        return True

    # -- liveness and size ------------------------------------------------------------------------
    def _check(self) -> None:
        """Runs at least once a second: timeouts, idle workers, warm workers, heartbeats."""
        now = self.clock()
        config = self.config
        send_heartbeats = now >= self._heartbeat_due
        if send_heartbeats:
            self._heartbeat_due = now + self.heartbeat_interval
        idle_spare = self.total - config.pool_min
        for worker in list(self.workers.values()):
            if worker.handle.exit_fd() is None and worker.handle.returncode() is not None:
                self._on_exit(worker)
            elif not worker.ready:
                if now - worker.spawned_at > config.startup_timeout:
                    self.retire(worker, Code.UNAVAILABLE,
                                f"did not say hello within startup-timeout ({config.startup_timeout:g} s)",
                                cause=exits.STARTUP_FAILURE)
            elif now - worker.last_seen > config.heartbeat_timeout:
                self.retire(worker, Code.TIMEOUT,
                            f"did not answer within heartbeat-timeout ({config.heartbeat_timeout:g} s)",
                            cause=exits.HEARTBEAT_TIMEOUT)
            elif not worker.jobs and idle_spare > 0 and now - worker.idle_since > config.idle_timeout:
                idle_spare -= 1
                self.ask_to_exit(worker, "idle")
            elif send_heartbeats:
                self._send(worker, worker_protocol.HEARTBEAT_FRAME)
        for worker in list(self.exiting.values()):
            if worker.handle.exit_fd() is None and worker.handle.returncode() is not None:
                self._on_exit(worker)
        if not self.closing and not self.backing_off():
            self.spawn(config.pool_min - self.total)
        self._tick = self.reactor.call_later(min(1.0, self.heartbeat_interval), self._check)

    def _on_exit(self, worker: PooledWorker) -> None:
        # Read what it said before exiting (a failed import's reason) before giving up on it.
        if worker.link is not None:
            self._on_link_readable(worker)
        else:
            self._on_readable()
        if self.workers.get(worker.identity) is worker:
            self.retire(worker, Code.SERVER, describe_exit(worker.handle.returncode()))
        self._forget(worker)

    def ask_to_exit(self, worker: PooledWorker, reason: str) -> None:
        """Let a worker finish what it has and exit; it gets no new jobs."""
        if not self._take_out(worker):
            return
        worker.retiring = reason
        worker.exit_reason = worker.exit_reason or EXIT_REASONS.get(reason, reason)
        self.exiting[worker.identity] = worker
        self._send(worker, worker_protocol.terminate(reason))
        log.info("app %s: worker %s asked to exit (%s)", self.app, worker.id, reason)

    def retire(self, worker: PooledWorker, code: int, reason: str, cause: str = exits.CRASH) -> None:
        """Give up on a worker now: kill it, answer its jobs with an error, let the engine replace it.
        ``cause`` is the exit reason published (a worker that never said hello failed to start)."""
        if not self._take_out(worker) and self.exiting.pop(worker.identity, None) is None:
            return
        if worker.exit_reason is None:
            worker.exit_reason = cause if worker.ready else exits.STARTUP_FAILURE
        self._confirm(worker)  # a worker still being started is killed once it is known
        self.outbox.pop(worker, None)
        if worker.handle.returncode() is None:
            self._send(worker, worker_protocol.terminate(reason))  # a thread backend's worker can only be told
        worker.handle.kill()
        self.exiting[worker.identity] = worker
        if worker.retiring is None:
            log.warning("app %s: worker %s %s", self.app, worker.id, reason)
        jobs, worker.jobs = worker.jobs, {}
        for job in jobs.values():
            job.fail(code, f"worker {reason}")
        if not worker.ready and not self.closing:
            detail = f": {worker.last_error}" if worker.last_error else ""
            self._start_failed(f"worker {reason} before it was ready{detail}")
        else:
            self.listener.capacity_freed(self)

    def _take_out(self, worker: PooledWorker) -> bool:
        """Remove ``worker`` from the live workers; False if it was not one of them."""
        if self.workers.pop(worker.identity, None) is None:
            return False
        if not worker.ready:
            self.unready -= 1
        return True

    def _forget(self, worker: PooledWorker) -> None:
        """The worker has exited: release what its handle holds."""
        if worker.handle.returncode() is None:
            return
        if self.exiting.pop(worker.identity, None) is not None:
            self._gone(worker)
        self._release(worker)
        if self.closing and not self.workers and not self.exiting:
            self._closed()

    def _release(self, worker: PooledWorker) -> None:
        # Unwatch the exit descriptor before the handle closes it: a closed descriptor left in the
        # poll set would be reported invalid on every round (or stand for a reused number).
        for fd in (worker.handle.start_fd(), worker.handle.exit_fd()):
            if fd is not None:
                self.reactor.remove_reader(fd)
        worker.handle.close()
        if worker.link is not None:
            worker.link.close()

    def _gone(self, worker: PooledWorker) -> None:
        if worker.output is not None:
            worker.output.close()
        self.listener.worker_exited(self, worker, describe_exit(worker.handle.returncode()))

    # -- closing ----------------------------------------------------------------------------------
    def close(self, grace: float, on_closed: Callable[[], None], reason: str = "engine stopping") -> None:
        """Ask every worker to exit, kill those still there after ``grace`` seconds, then release the
        socket and call ``on_closed``. Jobs still running are the caller's to answer first."""
        self.closing = True
        self._on_closed = on_closed
        self.backend.close()  # no new workers: its fork server goes
        for worker in list(self.workers.values()):
            self.ask_to_exit(worker, reason)
        self.flush()
        self.reactor.call_later(grace, self._kill_remaining)
        if not self.exiting:
            self._closed()

    def _kill_remaining(self) -> None:
        for worker in list(self.exiting.values()):
            self._confirm(worker)
            worker.handle.kill()
            self._forget(worker)
        if self.exiting and not self.released:
            # Threads that cannot be killed are abandoned; processes get one last look.
            for worker in list(self.exiting.values()):
                worker.handle.wait(1.0)
                if worker.handle.returncode() is None:
                    log.warning("app %s: worker %s abandoned at shutdown", self.app, worker.id)
                self.exiting.pop(worker.identity, None)
                self._gone(worker)
                self._release(worker)
            self._closed()

    def _closed(self) -> None:
        if self.released:
            return
        self.released = True
        self._tick.cancel()
        self.reactor.remove_flusher(self.flush)
        if self.sock is not None:
            self.reactor.remove_reader(self.sock)
            self.sock.close(0)
            self.sock = None
        if self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint[len("ipc://"):])
            except OSError:
                pass
        if self._on_closed is not None:
            self._on_closed()
