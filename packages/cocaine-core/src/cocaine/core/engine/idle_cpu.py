"""The idle CPU the daemon and its workers could use, in cores: whether one more worker would have
a core to run on.

A pool keeps no more workers than its work needs by the job time (pool.HORIZON) only while the
machine has no core to spare: then another worker would take CPU from the busy ones (the daemon's
reactor first) and serve no more. With idle cores it grows as work waits. Read at most once per
SAMPLE_EVERY, by whichever engine's thread asks when one is due (one at a time), from /proc/stat
for the CPUs this process may run on (its affinity, as `taskset` or a container's cpuset set it),
and no more than its cgroup's CPU quota leaves (cpu_quota.py: a container's CPU limit).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

from cocaine.core.engine.cpu_quota import CpuQuota, find_cpu_quota

#: A reading covers at least this long: shorter, the clock's ticks (10 ms) would make it jump.
SAMPLE_EVERY = 0.1
#: Each reading counts this much in the figure (a moving average): a burst of idleness while the busy
#: processes wait on each other is no core to spare.
READING_WEIGHT = 0.25


def _read_stat(path: str, cpus: frozenset[int]) -> tuple[int, int] | None:
    """(idle, total) clock ticks since boot of the CPUs ``cpus`` (their lines "cpuN ...", which
    follow the machine's "cpu ..." line); None if unreadable or none of them is there."""
    idle = total = 0
    found = False
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.startswith(b"cpu"):
                    break  # the CPUs' lines come first
                fields = line.split()
                number = fields[0][3:]
                if not number or int(number) not in cpus or len(fields) < 6:
                    continue
                ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                idle += ticks[3] + ticks[4]
                total += sum(ticks)
                found = True
    except (OSError, ValueError):
        return None
    return (idle, total) if found else None


class IdleCpu:
    """``idle_cpu()``: the cores idle, a moving average of readings at least SAMPLE_EVERY long.
    A reading is the idle share of the CPUs ``cpus`` (default: this process's affinity) times their
    number, or what ``quota`` leaves unused in that time if that is less."""

    def __init__(self, path: str = "/proc/stat", clock: Callable[[], float] = time.monotonic,
                 cpus: Iterable[int] | None = None, quota: CpuQuota | None = None) -> None:
        self.path = path
        self.clock = clock
        self.cpus = frozenset(os.sched_getaffinity(0) if cpus is None else cpus)
        self.quota = quota
        self.cores = len(self.cpus) if quota is None else min(len(self.cpus), quota.cores)
        self._sample = _read_stat(path, self.cpus)
        self._used = None if quota is None else quota.used()
        self._at = clock()
        self._reading = threading.Lock()  # engines on several threads: one reads, the others go on
        # Until a first interval is read: all of them (unreadable: the pool grows as jobs wait).
        self.idle = float(self.cores)

    def __call__(self) -> float:
        now = self.clock()
        if now - self._at >= SAMPLE_EVERY and self._reading.acquire(blocking=False):
            try:
                self._read(now)
            finally:
                self._reading.release()
        return self.idle

    def _read(self, now: float) -> None:
        elapsed = now - self._at
        if elapsed < SAMPLE_EVERY:
            return  # another thread has just read
        self._at = now
        sample, previous = _read_stat(self.path, self.cpus), self._sample
        self._sample = sample
        reading = None
        if sample is not None and previous is not None and sample[1] > previous[1]:
            reading = (sample[0] - previous[0]) / (sample[1] - previous[1]) * len(self.cpus)
        if self.quota is not None:
            used, previous_used = self.quota.used(), self._used
            self._used = used
            if used is not None and previous_used is not None:
                left = self.quota.cores - (used - previous_used) / elapsed
                reading = left if reading is None else min(reading, left)
            elif reading is not None:
                reading = min(reading, self.quota.cores)  # its usage unknown: no more than the quota
        if reading is not None:
            self.idle += READING_WEIGHT * (max(0.0, reading) - self.idle)


#: The daemon's one reader, shared by its engines.
IDLE_CPU = IdleCpu(quota=find_cpu_quota())
