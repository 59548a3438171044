"""One engine per app: drivers feed a job queue; jobs run on the app's worker pool.

Everything an engine owns lives on its reactor thread. Other threads (management) talk to it only
through :meth:`Engine.start`, :meth:`Engine.stop` and :meth:`Engine.info`, which hop onto that thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

import zmq

from cocaine.core.engine.context import TaskContext
from cocaine.core.engine.job import Job
from cocaine.core.engine.pool import WorkerPool
from cocaine.core.engine.pubsub import Publisher
from cocaine.core.engine.reactor import Reactor
from cocaine.core.errors import CocaineError, Code
from cocaine.core.manifest import Manifest
from cocaine.core.plugins import Registry

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, manifest: Manifest, registry: Registry, *, zmq_context: zmq.Context,
                 runtime_dir: str) -> None:
        self.manifest = manifest
        self.app = manifest.app
        self.registry = registry
        self.zmq_context = zmq_context
        self.runtime_dir = runtime_dir
        self.reactor = Reactor(name=f"engine-{self.app}")
        self.state = "created"
        self.started_at: float | None = None
        self.queue: deque[Job] = deque()
        self.queue_peak = 0
        self.broken_reason: str | None = None
        self._ids = itertools.count(1)
        self.contexts: dict[str, TaskContext] = {}
        self.drivers: dict[str, Any] = {}
        self.pool: WorkerPool | None = None
        self.publisher: Publisher | None = None

    # -- lifecycle, from any thread ---------------------------------------------------------------
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

    def stop(self, timeout: float = 10.0) -> None:
        """Answer every queued and running job, stop the workers and drivers, end the thread."""
        if self.reactor.thread is None or not self.reactor.thread.is_alive():
            return
        stopped: Future = Future()
        self.reactor.call_soon_threadsafe(self._stop, stopped, timeout)
        try:
            stopped.result(timeout + 10)
        finally:
            self.reactor.thread.join(timeout)
            self.reactor.close()

    def info(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.state != "running":
            return {"running": False, "state": self.state}
        future: Future = Future()
        self.reactor.call_soon_threadsafe(_resolve, future, self._info)
        return future.result(timeout)

    # -- on the reactor thread --------------------------------------------------------------------
    def _start(self, started: Future) -> None:
        try:
            manifest = self.manifest
            language = self.registry.get("language", manifest.type)(manifest.args)
            backend = self.registry.get("backend", manifest.engine.backend)()
            self.publisher = Publisher(self.zmq_context, self.app, manifest.pubsub)
            self.pool = WorkerPool(self, language, backend, self.runtime_dir)
            for name, task in manifest.tasks.items():
                context = self.contexts[name] = TaskContext(self, name)
                driver = task.driver(context, task.config)
                driver.start()
                self.drivers[name] = driver
        except Exception as e:  # noqa: BLE001 - reported to the caller, who reports it to the operator
            self._release(timeout=2.0)
            self.reactor.stop()
            detail = e.strerror if isinstance(e, zmq.ZMQError) else str(e)
            started.set_exception(CocaineError(f"app {self.app!r} cannot start: {detail}"))
            return
        self.state = "running"
        self.started_at = time.time()
        log.info("app %s: started with tasks %s", self.app, ", ".join(self.drivers))
        started.set_result(None)

    def _stop(self, stopped: Future, timeout: float) -> None:
        self.state = "stopping"
        try:
            self._release(timeout)
        finally:
            self.state = "stopped"
            self.reactor.stop()
            stopped.set_result(None)
            log.info("app %s: stopped", self.app)

    def _release(self, timeout: float) -> None:
        # Answer first, while the drivers' sockets can still carry the answers.
        while self.queue:
            self.queue.popleft().fail(Code.UNAVAILABLE, f"app {self.app!r} stopped")
        if self.pool is not None:
            for worker in list(self.pool.workers.values()):
                jobs, worker.jobs = worker.jobs, {}
                for job in jobs.values():
                    job.fail(Code.UNAVAILABLE, f"app {self.app!r} stopped")
            self.pool.stop(timeout)
        for name, driver in self.drivers.items():
            try:
                driver.stop()
            except Exception:
                log.exception("app %s: driver of task %s failed to stop", self.app, name)
        self.drivers.clear()
        if self.publisher is not None:
            self.publisher.close()

    # -- jobs -------------------------------------------------------------------------------------
    def submit(self, context: TaskContext, body: bytes | None, meta: dict, responder) -> None:
        self.admit(context, self.new_job(context, body, meta, responder))

    def new_job(self, context: TaskContext, body: bytes | None, meta: dict, responder) -> Job:
        return Job(next(self._ids), context.task, body, meta, responder, context.stats)

    def admit(self, context: TaskContext, job: Job, urgent: bool = False) -> bool:
        """Run ``job`` on a worker with free credit, or queue it (at the head if ``urgent``), or
        refuse it at once with 503. Returns whether it was accepted."""
        stats = context.stats
        if self.state != "running":
            stats.rejected += 1
            job.done = True
            job.responder.error(Code.UNAVAILABLE, f"app {self.app!r} is {self.state}")
            return False
        queue = self.queue
        pool = self.pool
        if not queue:
            worker = pool.least_loaded()
            if worker is not None:
                stats.accepted += 1
                pool.assign(worker, job)
                return True
        limit = self.manifest.engine.queue_limit
        # Jobs waiting for workers that are still starting do not count against the limit.
        if len(queue) >= limit + pool.starting() * self.manifest.engine.concurrency:
            stats.rejected += 1
            job.done = True
            job.responder.error(Code.UNAVAILABLE, f"queue is full (queue-limit {limit})")
            return False
        stats.accepted += 1
        if urgent:
            queue.appendleft(job)
        else:
            queue.append(job)
        if len(queue) > self.queue_peak:
            self.queue_peak = len(queue)
        self.dispatch()
        return True

    def dispatch(self) -> None:
        """Hand queued jobs to workers with free credit; start workers for what remains."""
        queue = self.queue
        pool = self.pool
        while queue:
            worker = pool.least_loaded()
            if worker is None:
                break
            pool.assign(worker, queue.popleft())
        if queue and self.state == "running":
            pool.grow(len(queue))

    def on_worker_ready(self) -> None:
        self.broken_reason = None

    def on_spawn_failed(self, reason: str) -> None:
        """A worker could not start: if none can serve, answer the waiting jobs rather than hang them."""
        self.broken_reason = reason
        if self.pool is not None and any(w.ready for w in self.pool.workers.values()):
            return
        if self.pool is not None and self.pool.starting():
            return  # another worker may still come up
        while self.queue:
            self.queue.popleft().fail(Code.UNAVAILABLE, f"app {self.app!r} is broken: {reason}")

    # -- info -------------------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        config = self.manifest.engine
        pool = self.pool
        busy = pool.busy()
        tasks = {}
        for name, driver in self.drivers.items():
            tasks[name] = {"type": driver.name, **driver.info(), "stats": self.contexts[name].stats.snapshot()}
        return {
            "running": True,
            "state": "broken" if self.broken_reason and not pool.total else "running",
            "broken-reason": self.broken_reason,
            "type": self.manifest.type,
            "args": self.manifest.args,
            "version": self.manifest.version,
            "uptime": round(time.time() - self.started_at, 3),
            "engine": {
                "backend": config.backend,
                "pool-limit": config.pool_limit,
                "queue-limit": config.queue_limit,
                "concurrency": config.concurrency,
                "heartbeat-timeout": config.heartbeat_timeout,
            },
            "pubsub": self.manifest.pubsub,
            "pool": {
                "total": pool.total,
                "busy": busy,
                "idle": pool.total - busy,
                "starting": pool.starting(),
                "spawned": pool.spawned,
                "spawn-failures": pool.spawn_failures,
            },
            "queue": {"depth": len(self.queue), "peak": self.queue_peak, "limit": config.queue_limit},
            "jobs": {
                "running": sum(len(w.jobs) for w in pool.workers.values()),
                "accepted": sum(c.stats.accepted for c in self.contexts.values()),
                "succeeded": sum(c.stats.succeeded for c in self.contexts.values()),
                "failed": sum(sum(c.stats.failed.values()) for c in self.contexts.values()),
                "rejected": sum(c.stats.rejected for c in self.contexts.values()),
            },
            "tasks": tasks,
        }


def _resolve(future: Future, fn) -> None:
    try:
        future.set_result(fn())
    except Exception as e:  # noqa: BLE001 - handed to the waiting thread
        future.set_exception(e)
