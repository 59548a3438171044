"""What an engine tells about itself on its pubsub endpoint and in its log, besides job results:
periodic statistics, worker lifecycle events, and the workers' own log lines and output.

Nothing here runs per job: ``@stats`` is made from the engine's figures
(:mod:`cocaine.core.engine.figures`), taken once per ``stats-interval``. The topics and payloads are
specified in docs/pubsub.md.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cocaine.core.engine import exits
from cocaine.core.engine.exits import signal_name
from cocaine.core.engine.figures import EngineFigures, QueuePeaks, read_rss
from cocaine.core.engine.stats import percentiles

if TYPE_CHECKING:
    from cocaine.core.engine.pool import PooledWorker, WorkerPool
    from cocaine.core.engine.pubsub import Publisher
    from cocaine.core.engine.reactor import Reactor

log = logging.getLogger(__name__)

LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
          logging.CRITICAL: "critical"}


def level_name(level: int) -> str:
    """The name of a logging level; a custom level is named after the standard one below it."""
    for number in sorted(LEVELS, reverse=True):
        if level >= number:
            return LEVELS[number]
    return "debug"


class Monitor:
    """One per engine, on its reactor thread: publishes ``@stats``, ``@worker`` and ``@log``, and
    counts workers spawned and gone (over every generation). Its inputs: the ``publisher``, the
    ``reactor`` for its timer, the engine's ``figures`` and the queue's ``peaks`` (it starts each
    interval's)."""

    def __init__(self, app: str, *, publisher: Publisher, reactor: Reactor, figures: Callable[[], EngineFigures],
                 peaks: QueuePeaks) -> None:
        self.app = app
        self.publisher = publisher
        self.reactor = reactor
        self.figures = figures
        self.peaks = peaks
        self.spawned = 0
        self.exits: Counter[str] = Counter()  # by reason
        self.interval = 0.0
        self._timer = None
        self._last_tick = 0.0
        self._last: dict[str, tuple[int, int, int, int, Counter]] = {}

    # -- periodic statistics ----------------------------------------------------------------------
    def start(self, interval: float) -> None:
        """Start (or restart, after a reload changed the interval) the ``@stats`` timer."""
        self.stop()
        self.interval = interval
        if interval and self.publisher.sock is not None:
            self._last_tick = time.monotonic()
            self._last = {name: self._counters(task) for name, task in self.figures().tasks.items()}
            self._timer = self.reactor.call_later(interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = self.reactor.call_later(self.interval, self._tick)
        self.publisher.publish("@stats", self.stats(self.figures()), [])

    @staticmethod
    def _counters(task) -> tuple[int, int, int, int, Counter]:
        return task.accepted, task.succeeded, task.rejected, task.failed_total, Counter(task.failed)

    def stats(self, figures: EngineFigures) -> dict[str, Any]:
        """The ``@stats`` payload: the pool and queue now, and each task's figures since the last one."""
        now = time.monotonic()
        elapsed = max(now - self._last_tick, 1e-6)
        self._last_tick = now
        tasks = {}
        for name, task in figures.tasks.items():
            current = self._counters(task)
            accepted, succeeded, rejected, failed, by_code = (
                a - b for a, b in zip(current, self._last.get(name, (0, 0, 0, 0, Counter()))))
            self._last[name] = current
            finished = succeeded + failed
            recent = itertools.islice(reversed(task.latencies), min(finished, len(task.latencies)))
            tasks[name] = {
                "accepted": accepted,
                "succeeded": succeeded,
                "failed": failed,
                "rejected": rejected,
                "failed-by-code": {str(code): n for code, n in sorted(by_code.items()) if n},
                "throughput": round(finished / elapsed, 3),
                "latency-ms": percentiles(recent),
                "totals": {"accepted": current[0], "succeeded": current[1], "failed": current[3],
                           "rejected": current[2]},
            }
        peak = max(figures.queue_interval_peak, figures.queue_depth)
        self.peaks.new_interval(figures.queue_depth)
        return {
            "interval": round(elapsed, 3),
            "state": figures.state,
            "generation": figures.generation,
            "pool": {"total": figures.total, "busy": figures.busy, "idle": figures.idle, "starting": figures.starting,
                     "limit": figures.pool_limit, "memory-rss": sum(filter(None, map(read_rss, figures.pids())))},
            "queue": {"depth": figures.queue_depth, "peak": peak, "limit": figures.queue_limit},
            "jobs": {"running": figures.running},
            "tasks": tasks,
        }

    # -- workers ----------------------------------------------------------------------------------
    def worker_spawned(self, pool: WorkerPool, worker: PooledWorker) -> None:
        self.spawned += 1
        self.publisher.publish("@worker spawned", {
            "worker": worker.id, "pid": worker.handle.pid, "generation": pool.generation,
            "backend": pool.backend.name}, [])

    def worker_ready(self, pool: WorkerPool, worker: PooledWorker) -> None:
        self.publisher.publish("@worker ready", {
            "worker": worker.id, "pid": worker.handle.pid, "generation": pool.generation,
            "startup-ms": round((time.monotonic() - worker.spawned_at) * 1000, 3)}, [])

    def worker_exited(self, pool: WorkerPool, worker: PooledWorker, description: str) -> None:
        reason = worker.exit_reason or exits.CRASH
        self.exits[reason] += 1
        returncode = worker.handle.returncode()
        self.publisher.publish("@worker exited", {
            "worker": worker.id, "pid": worker.handle.pid, "generation": pool.generation, "reason": reason,
            "status": returncode if returncode is not None and returncode >= 0 else None,
            "signal": signal_name(returncode), "description": f"worker {description}",
            "uptime": round(time.monotonic() - worker.spawned_at, 3)}, [])

    def worker_log(self, worker_id: str, level: int, message: str, stream: str = "log") -> None:
        """A line from a worker: a protocol ``log`` message, or what it wrote to stdout or stderr."""
        log.log(level, "%s", message, extra={"app": self.app, "worker": worker_id, "stream": stream})
        self.publisher.publish(f"@log {level_name(level)}", {
            "worker": worker_id, "level": level_name(level), "stream": stream, "message": message}, [])
