"""One engine per app: drivers feed a job queue; jobs run on the app's worker pool.

Everything an engine owns lives on its reactor thread. Other threads (management) talk to it only
through :meth:`Engine.start`, :meth:`Engine.reload`, :meth:`Engine.begin_stop` and
:meth:`Engine.info`, which hop onto that thread.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

import zmq

from cocaine.core.engine.context import EngineTaskContext
from cocaine.core.engine.deadlines import Deadlines
from cocaine.core.engine.figures import (BUSY, IDLE, STARTING, EngineFigures, QueuePeaks, TaskFigures, WorkerFigures,
                                         read_pss, read_rss)
from cocaine.core.engine.job import Job
from cocaine.core.engine.monitor import Monitor
from cocaine.core.engine.pool import HORIZON, PooledWorker, WorkerPool
from cocaine.core.engine.pubsub import Publisher
from cocaine.core.engine.reactor import Reactor
from cocaine.core.engine.stats import TaskStats
from cocaine.core.errors import CocaineError, Code
from cocaine.core.manifest import Manifest
from cocaine.core.plugins import Registry
from cocaine.core.security import SocketSecurity

log = logging.getLogger(__name__)

#: Seconds workers get to exit once an engine has answered every job and closes its pools.
CLOSE_GRACE = 2.0


class Engine:
    """Owns one app's drivers, queue, pools and monitor; listens to its pools (PoolListener) and
    takes its drivers' jobs (JobIntake)."""

    def __init__(self, manifest: Manifest, registry: Registry, *, zmq_context: zmq.Context,
                 runtime_dir: str, security: SocketSecurity | None = None, tick_claims=None,
                 forwarder=None) -> None:
        self.manifest = manifest
        self.app = manifest.app
        self.registry = registry
        self.zmq_context = zmq_context
        self.runtime_dir = runtime_dir
        self.security = security or SocketSecurity()
        self.tick_claims = tick_claims  # see TaskContext.claim
        self.forwarder = forwarder  # a cluster's: where engine.overflow "forward" sends what it cannot take
        self.forwarded = 0
        self.forwarding: set[Job] = set()  # forwarded jobs whose peer has not answered yet
        self.handed_back_jobs = 0  # jobs workers gave back unstarted, run elsewhere
        self.reactor = Reactor(name=f"engine-{self.app}")
        self.state = "created"
        self.started_at: float | None = None
        self.queue: deque[Job] = deque()
        self._regrowing = None  # the timer that asks the pool to grow again (_grow)
        self.queue_peaks = QueuePeaks()
        self._ids = itertools.count(1)
        self._deadlines = Deadlines()
        self._deadline_timer = None  # armed at or before the earliest deadline of a job not answered
        self.contexts: dict[str, EngineTaskContext] = {}
        self.drivers: dict[str, Any] = {}
        self.pool: WorkerPool | None = None
        self.old_pools: list[WorkerPool] = []  # earlier generations finishing their jobs
        self.generation = 0
        self.broken = False  # since a worker failed to start, until one starts
        self.publisher: Publisher | None = None
        self.monitor: Monitor | None = None  # statistics, worker events and worker logs on pubsub
        self._stopped: Future | None = None
        self._closing_pools: set = set()

    # -- from any thread --------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Start the reactor thread and everything on it; raise CocaineError if anything fails."""
        started: Future = Future()
        self.reactor.call_soon_threadsafe(self._start, started)
        self.reactor.start_thread()
        try:
            started.result(timeout)
        except BaseException:
            self.reactor.stop()
            self.reactor.thread.join(timeout)
            self.reactor.close()
            raise

    def reload(self, manifest: Manifest, timeout: float = 10.0) -> dict[str, Any]:
        """Switch to ``manifest`` without dropping work: new jobs go to a new generation of workers,
        running ones finish on the old. Only for a manifest whose tasks and pubsub are unchanged."""
        return with_memory(self._call(self._reload, manifest, timeout=timeout))

    def can_reload_in_place(self, manifest: Manifest) -> bool:
        def tasks(m: Manifest):
            return {name: (t.driver, t.config) for name, t in m.tasks.items()}

        return manifest.pubsub == self.manifest.pubsub and tasks(manifest) == tasks(self.manifest)

    def begin_stop(self, timeout: float) -> Future:
        """Refuse new jobs, let accepted ones finish for up to ``timeout`` seconds, answer the rest
        with an error, stop every worker and driver. The future resolves once all that is done."""
        stopped: Future = Future()
        if self.reactor.thread is None or not self.reactor.thread.is_alive():
            stopped.set_result(None)
        else:
            self.reactor.call_soon_threadsafe(self._begin_stop, stopped, timeout)
        return stopped

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.begin_stop(timeout).result(timeout + CLOSE_GRACE + 10)
        finally:
            self.join(timeout)

    def join(self, timeout: float) -> None:
        if self.reactor.thread is not None:
            self.reactor.thread.join(timeout)
        self.reactor.close()

    def info(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.state not in ("running", "stopping"):
            return {"running": False, "state": self.state}
        return with_memory(self._call(self._info, timeout=timeout))

    def figures(self, timeout: float = 2.0) -> EngineFigures | None:
        """A snapshot of the engine's figures (None unless the app runs): what the Prometheus
        endpoint shows, and what a node reports of its load."""
        if self.state not in ("running", "stopping"):
            return None
        return self._call(self._figures, timeout=timeout)

    def _call(self, fn, *args, timeout: float):
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except Exception as e:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(e)

        self.reactor.call_soon_threadsafe(run)
        return future.result(timeout)

    # -- lifecycle, on the reactor thread ---------------------------------------------------------
    def _new_pool(self, manifest: Manifest) -> WorkerPool:
        language = self.registry.get("language", manifest.type)(manifest.args)
        backend = self.registry.get("backend", manifest.engine.backend)(self.zmq_context)
        self.generation += 1
        return WorkerPool(manifest.engine, language, backend, app=self.app, generation=self.generation,
                          reactor=self.reactor, zmq_context=self.zmq_context, runtime_dir=self.runtime_dir,
                          listener=self)

    def _start(self, started: Future) -> None:
        try:
            self.publisher = Publisher(self.zmq_context, self.app, self.manifest.pubsub, self.security)
            self.monitor = Monitor(self.app, publisher=self.publisher, reactor=self.reactor, figures=self._figures,
                                   peaks=self.queue_peaks)
            self.pool = self._new_pool(self.manifest)
            for name, task in self.manifest.tasks.items():
                context = self.contexts[name] = EngineTaskContext(
                    self.app, name, intake=self, reactor=self.reactor, zmq_context=self.zmq_context,
                    security=self.security, publisher=self.publisher, tick_claims=self.tick_claims)
                driver = task.driver(context, task.config)
                driver.start()
                self.drivers[name] = driver
        except Exception as e:  # noqa: BLE001 - reported to the caller, who reports it to the operator
            self._release_drivers()
            if self.pool is not None:
                self.pool.close(0, lambda: None)
            self.reactor.stop()
            detail = e.strerror if isinstance(e, zmq.ZMQError) else str(e)
            started.set_exception(CocaineError(f"app {self.app!r} cannot start: {detail}"))
            return
        self.state = "running"
        self.started_at = time.time()
        self.monitor.start(self.manifest.stats_interval)
        self.publisher.event("started", {"generation": self.generation})
        log.info("app %s: started with tasks %s", self.app, ", ".join(self.drivers))
        started.set_result(None)

    def _reload(self, manifest: Manifest) -> dict[str, Any]:
        if self.state != "running":
            raise CocaineError(f"app {self.app!r} is {self.state}")
        try:
            pool = self._new_pool(manifest)
        except Exception as e:
            raise CocaineError(f"app {self.app!r} cannot reload: {e}") from e
        old, self.pool = self.pool, pool
        self.manifest = manifest
        self.old_pools.append(old)
        for worker in list(old.workers.values()):
            if not worker.jobs:
                old.ask_to_exit(worker, "reload")
        self._retire_old_pools()
        self.monitor.start(manifest.stats_interval)  # the interval may have changed
        self.publisher.event("reloaded", {"generation": self.generation})
        self.dispatch()
        return self._info()

    def _begin_stop(self, stopped: Future, timeout: float) -> None:
        if self._stopped is not None:  # already stopping: resolve this one too
            self._stopped.add_done_callback(lambda _: stopped.set_result(None))
            return
        self.state = "stopping"
        self._stopped = stopped
        self.reactor.call_later(timeout, self._finish_stop)
        self._maybe_finish_stop()

    def _maybe_finish_stop(self) -> None:
        if self.state == "stopping" and not self.queue and not self.forwarding and not self.pool.running_jobs() \
                and not any(p.running_jobs() for p in self.old_pools):
            self._finish_stop()

    def _finish_stop(self) -> None:
        if self.state != "stopping":
            return
        self.state = "closing"
        # Answer first, while the drivers' sockets can still carry the answers.
        while self.queue:
            self.queue.popleft().fail(Code.UNAVAILABLE, f"app {self.app!r} stopped before the job ran")
        forwarding, self.forwarding = self.forwarding, set()
        for job in forwarding:
            job.fail(Code.UNAVAILABLE, f"app {self.app!r} stopped before the peer answered the forwarded job")
        pools = [self.pool, *self.old_pools]
        for pool in pools:
            for worker in [*pool.workers.values(), *pool.exiting.values()]:
                jobs, worker.jobs = worker.jobs, {}
                for job in jobs.values():
                    job.fail(Code.UNAVAILABLE, f"app {self.app!r} stopped before the job finished")
        self._closing_pools = set(pools)
        for pool in pools:
            pool.close(CLOSE_GRACE, lambda pool=pool: self._pool_closed(pool))

    def _pool_closed(self, pool: WorkerPool) -> None:
        self._closing_pools.discard(pool)
        if self._closing_pools:
            return
        self.monitor.stop()
        self.publisher.event("stopped", {})
        self._release_drivers()
        self.state = "stopped"
        self.reactor.stop()
        log.info("app %s: stopped", self.app)
        self._stopped.set_result(None)

    def _release_drivers(self) -> None:
        for name, driver in self.drivers.items():
            try:
                driver.stop()
            except Exception:
                log.exception("app %s: driver of task %s failed to stop", self.app, name)
        self.drivers.clear()
        if self.publisher is not None:
            self.publisher.close()

    def _retire_old_pools(self) -> None:
        for pool in list(self.old_pools):
            if not pool.running_jobs() and not pool.closing:
                pool.close(CLOSE_GRACE, lambda pool=pool: self.old_pools.remove(pool), reason="reload")

    # -- jobs (JobIntake) ---------------------------------------------------------------------------
    def new_job(self, task: str, stats: TaskStats, body: bytes | None, meta: dict, responder,
                timeout: float | None = None) -> Job:
        """A job for ``task``; ``timeout`` defaults to the engine's ``request-timeout``."""
        if timeout is None:
            timeout = self.manifest.engine.request_timeout
        return Job(next(self._ids), task, body, meta, responder, stats, timeout)

    def admit(self, job: Job, urgent: bool = False) -> bool:
        """Run ``job`` on a worker with free credit, or queue it (at the head if ``urgent``), or
        refuse it at once with 503. Returns whether it was accepted."""
        stats = job.stats
        if self.state != "running":
            return self._refuse(stats, job, f"app {self.app!r} is {self.state}")
        pool = self.pool
        if pool.broken_reason is not None and pool.backing_off() and not pool.total:
            wait = pool.retry_at - time.monotonic()
            return self._refuse(stats, job, f"app {self.app!r} is broken: {pool.broken_reason} "
                                            f"(next start attempt in {wait:.1f} s)")
        config = self.manifest.engine
        queue = self.queue
        if not queue:
            worker = pool.least_loaded()
            if worker is not None:
                if worker.jobs:
                    pool.all_busy()
                stats.accepted += 1
                if job.deadline is not None:
                    self._watch_deadline(job)
                pool.assign(worker, job)
                return True
        # Jobs waiting for workers that are still starting do not count against the limit, nor
        # those the workers would hold if their jobs were quick (pool.held_back).
        depth = len(queue)
        limit = config.queue_limit
        if depth >= limit and depth >= limit + pool.starting() * config.concurrency + pool.held_back():
            return self._refuse(stats, job, f"queue is full (queue-limit {config.queue_limit})")
        stats.accepted += 1
        if job.deadline is not None:
            self._watch_deadline(job)
        if urgent:
            queue.appendleft(job)
        else:
            queue.append(job)
        depth += 1
        if depth > self.queue_peaks.interval:  # the interval's peak is never above the all-time one
            self.queue_peaks.raise_to(depth)
        # No worker has room for it (every gain of room dispatches the queue at once, so a queue
        # that was not empty had none either): the pool may grow.
        self._grow()
        return True

    def withdraw(self, job: Job) -> None:
        """Take a job that has not reached a worker out of the queue (a driver cancelled it)."""
        try:
            self.queue.remove(job)
        except ValueError:
            pass

    def _refuse(self, stats, job: Job, message: str) -> bool:
        if self._forward(job, message):
            stats.accepted += 1
            if job.deadline is not None:
                self._watch_deadline(job)  # a peer that never answers still answers by the deadline
            return True
        stats.rejected += 1
        # never ran: a driver's handle drops what it pushes from now on
        job.release().error(Code.UNAVAILABLE, message)
        return False

    def _forward(self, job: Job, why: str) -> bool:
        """Hand a job this node cannot run to a peer (overflow "forward"); False if it stays here."""
        if self.manifest.engine.overflow == "forward" and self._forwardable(job) and self.forwarder.forward(
                self, job, why):
            self.forwarded += 1
            self.forwarding.add(job)
            return True
        return False

    def _forwardable(self, job: Job) -> bool:
        """A peer can run this job for us: we are in a cluster, the job came from a client (not from a
        peer: one hop at most, so never back) and has a requester (not a timer's). A streamed
        request's further chunks follow it through the job's handle."""
        driver = self.drivers.get(job.task)
        return self.forwarder is not None and "forwarded-by" not in job.meta and driver is not None \
            and not driver.publishes

    def forward_finished(self, job: Job, code: int | None = None, message: str = "") -> None:
        """The peer's final answer to a forwarded job (on the reactor; the forwarder relays chunks to
        ``job.chunk`` before it)."""
        self.forwarding.discard(job)
        if code is None:
            job.end()
        else:
            job.fail(code, message)
        if self.state == "stopping":
            self._maybe_finish_stop()

    def dispatch(self) -> None:
        """Hand queued jobs to workers with free credit; start workers for what remains."""
        queue = self.queue
        pool = self.pool
        while queue:
            if queue[0].done:  # expired while it waited
                queue.popleft()
                continue
            worker = pool.least_loaded(len(queue))
            if worker is None:
                break
            pool.assign(worker, queue.popleft())
        if queue:
            self._grow()

    def _grow(self) -> None:
        """Jobs wait in the queue that no worker has room for: start workers for them, or answer
        them if the app cannot start any."""
        if self._regrowing is not None:
            return  # the pool's target holds: asked again when the timer fires
        pool = self.pool
        queue = self.queue
        if pool.broken_reason is not None and pool.backing_off() and not pool.total:
            self._fail_queue(f"app {self.app!r} is broken: {pool.broken_reason}")
        elif pool.grow(len(queue), time.monotonic() - queue[0].accepted_at):
            # The pool's target held a start back: ask again when the oldest job has waited too long.
            self._regrowing = self.reactor.call_later(HORIZON, self._regrow)

    def _regrow(self) -> None:
        self._regrowing = None
        if self.queue:
            self._grow()  # past HORIZON, the target no longer holds: ready workers may take jobs
            self.dispatch()

    def _fail_queue(self, message: str) -> None:
        """The app is broken: its queued jobs never ran, so a peer may run them (overflow "forward")."""
        while self.queue:
            job = self.queue.popleft()
            if not job.done and not self._forward(job, message):
                job.fail(Code.UNAVAILABLE, message)
        if self.state == "stopping":
            self._maybe_finish_stop()

    # -- what the pools tell (PoolListener) -------------------------------------------------------
    def queued(self, pool: WorkerPool) -> int:
        return len(self.queue) if pool is self.pool else 0

    def capacity_freed(self, pool: WorkerPool) -> None:
        """A pool has free credit or lost a worker: move the queue, retire drained generations."""
        if pool is self.pool:
            self.dispatch()
        elif self.old_pools:
            self._retire_old_pools()
        if self.state == "stopping":
            self._maybe_finish_stop()

    def handed_back(self, pool: WorkerPool, jobs: list[Job]) -> None:
        """A worker's running job outlived the handback threshold and the worker gave back the jobs
        queued behind it, unstarted: they go first, to another worker or a new one. They were
        accepted, so queue-limit does not apply; a deadline still does (``_expire`` watches them)."""
        self.handed_back_jobs += len(jobs)
        self.queue.extendleft(reversed(jobs))
        self.dispatch()

    def start_failed(self, pool: WorkerPool, reason: str, attempt: int, retry_in: float) -> None:
        """A worker could not start: if none can serve, answer the waiting jobs rather than hang them."""
        if pool is not self.pool:
            return
        self.broken = True
        self.publisher.event("broken", {"reason": reason, "attempt": attempt, "retry-in": retry_in})
        # Try again once the backoff is over, even if no new request comes to trigger it.
        self.reactor.call_at(pool.retry_at, self.capacity_freed, pool)
        if not any(w.ready for w in pool.workers.values()) and not pool.starting():
            self._fail_queue(f"app {self.app!r} is broken: {reason}")

    def worker_spawned(self, pool: WorkerPool, worker: PooledWorker) -> None:
        self.monitor.worker_spawned(pool, worker)

    def worker_exited(self, pool: WorkerPool, worker: PooledWorker, description: str) -> None:
        self.monitor.worker_exited(pool, worker, description)

    def worker_log(self, worker_id: str, level: int, message: str, stream: str = "log") -> None:
        self.monitor.worker_log(worker_id, level, message, stream)

    def worker_ready(self, pool: WorkerPool, worker: PooledWorker) -> None:
        self.monitor.worker_ready(pool, worker)
        if self.broken and pool is self.pool:
            self.broken = False
            log.info("app %s: recovered: a worker started", self.app)
            self.publisher.event("recovered", {"generation": self.generation})

    # -- deadlines --------------------------------------------------------------------------------
    def _watch_deadline(self, job: Job) -> None:
        self._deadlines.add(job)
        timer = self._deadline_timer
        # A timer that fires early (its job was answered) finds nothing due and re-arms for the next.
        if timer is None or job.deadline < timer.when:
            if timer is not None:
                timer.cancel()
            self._deadline_timer = self.reactor.call_at(job.deadline, self._expire)

    def _expire(self) -> None:
        now = time.monotonic()
        for job in self._deadlines.due(now):
            if not job.done:
                # A job on a worker keeps its credit until the worker answers; the answer is dropped.
                message = f"deadline exceeded ({now - job.accepted_at:.3f} s after acceptance)"
                if job.handle is not None:  # also tell the worker: a streamed request ends there too
                    job.handle.cancel(Code.TIMEOUT, message)
                else:
                    job.fail(Code.TIMEOUT, message)
        earliest = self._deadlines.earliest()
        self._deadline_timer = None if earliest is None else self.reactor.call_at(earliest, self._expire)

    # -- figures and info ---------------------------------------------------------------------------
    def public_state(self) -> str:
        """The state ``info`` shows: ``broken`` while no worker can start, else the engine's state."""
        pool = self.pool
        broken = pool.broken_reason is not None and not any(w.ready for w in pool.workers.values())
        return "broken" if broken else self.state

    def running_jobs(self) -> int:
        return self.pool.running_jobs() + sum(p.running_jobs() for p in self.old_pools)

    def _figures(self) -> EngineFigures:
        """The snapshot ``info``, ``@stats`` and the metrics are made from; on the reactor, copies only."""
        pool = self.pool
        now = time.monotonic()
        workers = tuple(
            WorkerFigures(w.id, w.handle.pid, p.generation, BUSY if w.jobs else IDLE if w.ready else STARTING,
                          len(w.jobs), round(now - w.spawned_at, 3))
            for p in (pool, *self.old_pools) for w in p.workers.values())
        busy, starting = pool.busy(), pool.starting()
        config = self.manifest.engine
        return EngineFigures(
            state=self.public_state(), started_at=self.started_at, generation=self.generation,
            busy=busy, idle=pool.total - busy - starting, starting=starting, stalled=pool.stalled(),
            exiting=len(pool.exiting) + sum(p.total + len(p.exiting) for p in self.old_pools),
            pool_limit=config.pool_limit, spawned=pool.spawned, spawn_failures=pool.spawn_failures,
            broken_reason=pool.broken_reason, spawned_total=self.monitor.spawned, exits=dict(self.monitor.exits),
            workers=workers, running=self.running_jobs(), queue_depth=len(self.queue),
            queue_peak=self.queue_peaks.all_time, queue_interval_peak=self.queue_peaks.interval,
            queue_limit=config.queue_limit,
            tasks={name: TaskFigures.of(context.stats) for name, context in self.contexts.items()},
            forwarded=self.forwarded)

    def _info(self) -> dict[str, Any]:
        figures = self._figures()
        manifest = self.manifest
        return {
            "running": True,
            "state": figures.state,
            "broken-reason": figures.broken_reason,
            "type": manifest.type,
            "args": manifest.args,
            "version": manifest.version,
            "uptime": round(time.time() - figures.started_at, 3),
            "engine": manifest.engine.to_json(),
            "pubsub": manifest.pubsub,
            "stats-interval": manifest.stats_interval,
            "pool": {
                "total": figures.total,
                "busy": figures.busy,
                "idle": figures.idle,
                "starting": figures.starting,
                "stalled": figures.stalled,
                "exiting": figures.exiting,
                "generation": figures.generation,
                "spawned": figures.spawned,
                "spawn-failures": figures.spawn_failures,
                "credit": self.pool.credit,
                "job-time": None if self.pool.job_time is None else round(self.pool.job_time, 6),
                "target": self.pool.target,
                "fork-server": self.pool.backend.info(),
                "spawned-total": figures.spawned_total,
                "exits": figures.exits,
                "workers": [{"id": w.id, "pid": w.pid, "generation": w.generation, "state": w.state, "jobs": w.jobs,
                             "uptime": w.uptime} for w in figures.workers],
            },
            "queue": {"depth": figures.queue_depth, "peak": figures.queue_peak, "limit": figures.queue_limit,
                      "handed-back": self.handed_back_jobs},
            "jobs": figures.jobs(),
            "tasks": {name: {"type": driver.name, **driver.info(), "stats": figures.tasks[name].to_json()}
                      for name, driver in self.drivers.items()},
        }


def with_memory(info: dict[str, Any]) -> dict[str, Any]:
    """Add each process worker's resident and proportional memory (and the workers' totals) to
    ``info``, and the fork server's, from /proc. Done by the caller, off the engine's reactor."""
    pool = info.get("pool")
    if pool:
        total = total_pss = 0
        for worker in pool["workers"]:
            worker["memory-rss"] = rss = read_rss(worker["pid"])
            worker["memory-pss"] = pss = read_pss(worker["pid"])
            total += rss or 0
            total_pss += pss or 0
        pool["memory-rss"] = total
        pool["memory-pss"] = total_pss
        server = pool.get("fork-server")
        if server:
            server["memory-rss"] = read_rss(server["pid"])
            server["memory-pss"] = read_pss(server["pid"])
    return info
