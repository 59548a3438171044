"""One consistent snapshot of an engine's figures: the one source of ``info``, ``@stats``, the
Prometheus metrics (and a cluster's load reports).

An engine takes it on its reactor thread (:meth:`Engine.figures`), where it only copies; whoever
formats it does so on its own thread. The words are defined once, here: a worker is ``starting``
until it said hello, then ``busy`` while it has jobs and ``idle`` otherwise, so that
``busy + idle + starting == total`` everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cocaine.core.engine.stats import TaskStats, percentiles

STARTING, IDLE, BUSY = "starting", "idle", "busy"
WORKER_STATES = (BUSY, IDLE, STARTING)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    id: str
    pid: int | None
    generation: int
    state: str  # STARTING, IDLE or BUSY
    jobs: int
    uptime: float  # seconds


@dataclass(frozen=True, slots=True)
class TaskFigures:
    accepted: int
    rejected: int
    succeeded: int
    failed: dict[int, int]  # by error code
    latencies: tuple[float, ...]  # seconds, the most recent last
    latency_sum: float  # seconds, over every finished job

    @classmethod
    def of(cls, stats: TaskStats) -> TaskFigures:
        return cls(stats.accepted, stats.rejected, stats.succeeded, dict(stats.failed), tuple(stats.latencies),
                   stats.latency_sum)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def to_json(self) -> dict[str, Any]:
        """A task's ``stats`` in ``info``."""
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "succeeded": self.succeeded,
            "failed": self.failed_total,
            "failed-by-code": {str(code): n for code, n in sorted(self.failed.items())},
            "latency-ms": percentiles(self.latencies),
        }


@dataclass(frozen=True, slots=True)
class EngineFigures:
    """An engine's figures at one moment. Counts of workers are of the current generation; the
    ``workers`` list and ``exiting`` cover earlier generations still finishing their jobs too."""

    state: str  # "broken" while no worker can start, else the engine's state
    started_at: float | None  # Unix time
    generation: int
    # the current generation's pool
    busy: int
    idle: int
    starting: int
    stalled: int
    exiting: int
    pool_limit: int
    spawned: int  # by this generation
    spawn_failures: int
    broken_reason: str | None
    # every generation
    spawned_total: int
    exits: dict[str, int]  # by reason (exits module)
    workers: tuple[WorkerFigures, ...]
    running: int  # jobs on workers
    # the queue
    queue_depth: int
    queue_peak: int  # since the app started
    queue_interval_peak: int  # since the last @stats
    queue_limit: int
    tasks: dict[str, TaskFigures]
    forwarded: int = 0  # jobs handed to a cluster peer (engine.overflow "forward")

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.starting

    def jobs(self) -> dict[str, int]:
        """``info``'s job totals over every task."""
        tasks = self.tasks.values()
        return {
            "running": self.running,
            "forwarded": self.forwarded,
            "accepted": sum(t.accepted for t in tasks),
            "succeeded": sum(t.succeeded for t in tasks),
            "failed": sum(t.failed_total for t in tasks),
            "rejected": sum(t.rejected for t in tasks),
        }

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid]


class QueuePeaks:
    """The deepest the queue got: since the app started, and in the current ``@stats`` interval. The
    engine raises them as jobs queue; the monitor starts each interval."""

    __slots__ = ("all_time", "interval")

    def __init__(self) -> None:
        self.all_time = 0
        self.interval = 0

    def raise_to(self, depth: int) -> None:
        self.interval = depth
        if depth > self.all_time:
            self.all_time = depth

    def new_interval(self, depth: int) -> None:
        self.interval = depth
