"""Per-task counters the job path keeps, and the percentiles made from them."""

from __future__ import annotations

import time
from collections import Counter, deque

LATENCY_WINDOW = 1024  # recent jobs whose latency the percentiles describe


class TaskStats:
    """Counters of one task: accepted, rejected, succeeded, failed by code, recent latencies."""

    __slots__ = ("accepted", "rejected", "succeeded", "failed", "latencies", "latency_sum")

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.succeeded = 0
        self.failed: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.latency_sum = 0.0  # seconds, over every finished job (a Prometheus summary's _sum)

    def finished(self, accepted_at: float, code: int | None) -> None:
        """A job accepted at ``accepted_at`` (monotonic) got its final answer: ``code`` None for success."""
        if code is None:
            self.succeeded += 1
        else:
            self.failed[code] += 1
        latency = time.monotonic() - accepted_at
        self.latencies.append(latency)
        self.latency_sum += latency


def quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values (None for none)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def percentiles(latencies) -> dict[str, float | None]:
    """p50, p90 and p99 in milliseconds of some latencies in seconds (None for none)."""
    ordered = sorted(latencies)
    return {name: None if (value := quantile(ordered, q)) is None else round(value * 1000, 3)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
