"""The machine's idle CPU, in cores: whether one more worker would have a core to run on.

A pool keeps no more workers than its work needs by the job time (pool.HORIZON) only while the
machine has no core to spare: then another worker would take CPU from the busy ones (the daemon's
reactor first) and serve no more. With idle cores it grows as work waits. Read from /proc/stat (the
whole machine, as the scheduler sees it; a container's CPU quota is not), at most once per
SAMPLE_EVERY, by any engine's thread; a reading is a pair of numbers, replaced at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

#: A reading covers at least this long: shorter, the clock's ticks (10 ms) would make it jump.
SAMPLE_EVERY = 0.1
#: Each reading counts this much in the figure (a moving average): a burst of idleness while the busy
#: processes wait on each other is no core to spare.
READING_WEIGHT = 0.25


def _read_stat(path: str) -> tuple[int, int] | None:
    """(idle, total) clock ticks of every CPU since boot; None if unreadable."""
    try:
        with open(path, "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 6 or fields[0] != b"cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[3] + ticks[4], sum(ticks)


class IdleCpu:
    """``idle_cpu()``: the cores idle, a moving average of readings at least SAMPLE_EVERY long."""

    def __init__(self, path: str = "/proc/stat", clock: Callable[[], float] = time.monotonic,
                 cores: int | None = None) -> None:
        self.path = path
        self.clock = clock
        self.cores = cores or os.cpu_count() or 1  # the CPUs /proc/stat counts
        self._sample = _read_stat(path)
        self._at = clock()
        # Until a first interval is read: all of them (unreadable: the pool grows as jobs wait).
        self.idle = float(self.cores)

    def __call__(self) -> float:
        now = self.clock()
        if now - self._at >= SAMPLE_EVERY:
            sample = _read_stat(self.path)
            previous, self._sample, self._at = self._sample, sample, now
            if sample is not None and previous is not None and sample[1] > previous[1]:
                reading = (sample[0] - previous[0]) / (sample[1] - previous[1]) * self.cores
                self.idle += READING_WEIGHT * (reading - self.idle)
        return self.idle


#: The daemon's one reader, shared by its engines.
IDLE_CPU = IdleCpu()
