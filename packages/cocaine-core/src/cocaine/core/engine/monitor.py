"""What an engine tells about itself on its pubsub endpoint and in its log, besides job results:
periodic statistics, worker lifecycle events, and the workers' own log lines and output.

Nothing here runs per job: statistics are counters the job path keeps anyway (see
:class:`~cocaine.core.engine.context.TaskStats`), read once per ``stats-interval``. The topics and
payloads are specified in docs/pubsub.md.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from cocaine.core.engine.context import percentiles

if TYPE_CHECKING:
    from cocaine.core.engine.engine import Engine
    from cocaine.core.engine.pool import Worker, WorkerPool

log = logging.getLogger(__name__)

#: Why a worker exited (the ``reason`` of ``@worker exited``, the label of the exits metric).
IDLE = "idle"
RELOAD = "reload"
STOPPING = "stopping"
HEARTBEAT_TIMEOUT = "heartbeat-timeout"
STARTUP_FAILURE = "startup-failure"
CRASH = "crash"
PROTOCOL_ERROR = "protocol-error"

LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
          logging.CRITICAL: "critical"}
#: The level of a line a worker writes, by stream: an interpreter's dying traceback or a native
#: library's complaint on stderr is captured even when the runtime cannot speak any more.
OUTPUT_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def level_name(level: int) -> str:
    """The name of a logging level; a custom level is named after the standard one below it."""
    for number in sorted(LEVELS, reverse=True):
        if level >= number:
            return LEVELS[number]
    return "debug"


def read_rss(pid: int | None) -> int | None:
    """Resident memory of a process in bytes, from /proc (None: no such process, or not Linux)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def read_pss(pid: int | None) -> int | None:
    """Proportional memory of a process in bytes: its private pages plus its share of the pages it
    shares (a forked worker shares its fork server's), from /proc (None: no such process)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def signal_name(returncode: int | None) -> str | None:
    """``SIGKILL`` for a worker killed by it (a negative return code), else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class Monitor:
    """One per engine, on its reactor thread: publishes ``@stats``, ``@worker`` and ``@log``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.app = engine.app
        self.spawned = 0  # over every generation, unlike a pool's own count
        self.exits: Counter[str] = Counter()  # by reason
        self.queue_peak = 0  # in the current stats interval; the engine raises it
        self._timer = None
        self._last_tick = 0.0
        self._last: dict[str, tuple[int, int, int, int, Counter]] = {}

    # -- periodic statistics ----------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart, after a reload changed the interval) the ``@stats`` timer."""
        self.stop()
        interval = self.engine.manifest.stats_interval
        if interval and self.engine.publisher.sock is not None:
            self._last_tick = time.monotonic()
            self._last = {name: self._counters(context.stats) for name, context in self.engine.contexts.items()}
            self._timer = self.engine.reactor.call_later(interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        interval = self.engine.manifest.stats_interval
        self._timer = self.engine.reactor.call_later(interval, self._tick)
        self.engine.publisher.publish("@stats", self.stats(), [])

    @staticmethod
    def _counters(stats) -> tuple[int, int, int, int, Counter]:
        return stats.accepted, stats.succeeded, stats.rejected, sum(stats.failed.values()), Counter(stats.failed)

    def stats(self) -> dict[str, Any]:
        """The ``@stats`` payload: the pool and queue now, and each task's figures since the last one."""
        engine = self.engine
        now = time.monotonic()
        elapsed = max(now - self._last_tick, 1e-6)
        self._last_tick = now
        tasks = {}
        for name, context in engine.contexts.items():
            stats = context.stats
            current = self._counters(stats)
            accepted, succeeded, rejected, failed, by_code = (
                a - b for a, b in zip(current, self._last.get(name, (0, 0, 0, 0, Counter()))))
            self._last[name] = current
            finished = succeeded + failed
            recent = itertools.islice(reversed(stats.latencies), min(finished, len(stats.latencies)))
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
        pool = engine.pool
        busy = pool.busy()
        peak, self.queue_peak = max(self.queue_peak, len(engine.queue)), len(engine.queue)
        return {
            "interval": round(elapsed, 3),
            "state": engine.public_state(),
            "generation": engine.generation,
            "pool": {"total": pool.total, "busy": busy, "idle": pool.total - busy, "starting": pool.starting(),
                     "limit": engine.manifest.engine.pool_limit,
                     "memory-rss": sum(filter(None, (read_rss(w.handle.pid) for w in pool.workers.values())))},
            "queue": {"depth": len(engine.queue), "peak": peak, "limit": engine.manifest.engine.queue_limit},
            "jobs": {"running": engine.running_jobs()},
            "tasks": tasks,
        }

    def snapshot(self) -> dict[str, Any]:
        """Copies of the engine's figures for the metrics thread, which formats them; runs on the
        reactor, so it only copies."""
        engine = self.engine
        pool = engine.pool
        busy, starting = pool.busy(), pool.starting()
        config = engine.manifest.engine
        return {
            "state": engine.public_state(),
            "started-at": engine.started_at,
            "pool": {"busy": busy, "idle": pool.total - busy - starting, "starting": starting,
                     "limit": config.pool_limit,
                     "pids": [w.handle.pid for p in (pool, *engine.old_pools) for w in p.workers.values()]},
            "spawned": self.spawned,
            "exits": dict(self.exits),
            "running": engine.running_jobs(),
            "queue": {"depth": len(engine.queue), "peak": engine.queue_peak, "limit": config.queue_limit},
            "tasks": {name: {"accepted": c.stats.accepted, "succeeded": c.stats.succeeded,
                             "rejected": c.stats.rejected, "failed": dict(c.stats.failed),
                             "latencies": list(c.stats.latencies), "latency-sum": c.stats.latency_sum}
                      for name, c in engine.contexts.items()},
        }

    # -- workers ----------------------------------------------------------------------------------
    def worker_spawned(self, pool: WorkerPool, worker: Worker) -> None:
        self.spawned += 1
        self.engine.publisher.publish("@worker spawned", {
            "worker": worker.id, "pid": worker.handle.pid, "generation": pool.generation,
            "backend": pool.backend.name}, [])

    def worker_ready(self, pool: WorkerPool, worker: Worker) -> None:
        self.engine.publisher.publish("@worker ready", {
            "worker": worker.id, "pid": worker.handle.pid, "generation": pool.generation,
            "startup-ms": round((time.monotonic() - worker.spawned_at) * 1000, 3)}, [])

    def worker_exited(self, pool: WorkerPool, worker: Worker, description: str) -> None:
        reason = worker.exit_reason or CRASH
        self.exits[reason] += 1
        returncode = worker.handle.returncode()
        self.engine.publisher.publish("@worker exited", {
            "worker": worker.id, "pid": worker.handle.pid, "generation": pool.generation, "reason": reason,
            "status": returncode if returncode is not None and returncode >= 0 else None,
            "signal": signal_name(returncode), "description": f"worker {description}",
            "uptime": round(time.monotonic() - worker.spawned_at, 3)}, [])

    def worker_output(self, worker_id: str, stream: str, line: str) -> None:
        """A line a process worker wrote: stdout lines are info, stderr lines warning."""
        self.worker_log(worker_id, OUTPUT_LEVELS[stream], line, stream)

    def worker_log(self, worker_id: str, level: int, message: str, stream: str = "log") -> None:
        """A line from a worker: a protocol ``log`` message, or what it wrote to stdout or stderr."""
        log.log(level, "%s", message, extra={"app": self.app, "worker": worker_id, "stream": stream})
        self.engine.publisher.publish(f"@log {level_name(level)}", {
            "worker": worker_id, "level": level_name(level), "stream": stream, "message": message}, [])
