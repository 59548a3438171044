"""What an engine gives each of its drivers: submitting jobs, publishing, and per-task statistics."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cocaine.core.plugin_api import Responder
from cocaine.core.engine.handle import JobHandle

if TYPE_CHECKING:
    import zmq

    from cocaine.core.engine.engine import Engine
    from cocaine.core.engine.job import Job
    from cocaine.core.engine.reactor import Reactor

LATENCY_WINDOW = 1024  # recent jobs whose latency the percentiles describe


class TaskStats:
    """Counters of one task: accepted, rejected, succeeded, failed by code, recent latencies."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.succeeded = 0
        self.failed: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.latency_sum = 0.0  # seconds, over every finished job (a Prometheus summary's _sum)

    def finished(self, job: Job, code: int | None) -> None:
        if code is None:
            self.succeeded += 1
        else:
            self.failed[code] += 1
        latency = time.monotonic() - job.accepted_at
        self.latencies.append(latency)
        self.latency_sum += latency

    def snapshot(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "succeeded": self.succeeded,
            "failed": sum(self.failed.values()),
            "failed-by-code": {str(code): n for code, n in sorted(self.failed.items())},
            "latency-ms": percentiles(self.latencies),
        }


def quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values (None for none)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def percentiles(latencies) -> dict[str, float | None]:
    """p50, p90 and p99 in milliseconds of some latencies in seconds (None for none)."""
    ordered = sorted(latencies)
    return {name: None if (value := quantile(ordered, q)) is None else round(value * 1000, 3)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


class TaskContext:
    """The engine as one task's driver sees it. Use only from the reactor thread."""

    def __init__(self, engine: Engine, task: str) -> None:
        self.engine = engine
        self.app = engine.app
        self.task = task
        self.stats = TaskStats()

    @property
    def reactor(self) -> Reactor:
        return self.engine.reactor

    @property
    def zmq_context(self) -> zmq.Context:
        return self.engine.zmq_context

    def server_socket(self, socket_type: int, endpoint: str) -> zmq.Socket:
        """A socket of ``socket_type`` bound to ``endpoint`` and protected as the daemon says: its
        maximum message size and, when configured, CURVE with ZAP (docs/security.md). Every driver
        that binds a socket clients connect to makes it here. The driver closes it in ``stop()``."""
        return self.engine.security.bind(self.zmq_context, socket_type, endpoint)

    def secure(self, sock: zmq.Socket, *, server: bool = True) -> zmq.Socket:
        """Protect a socket the driver made itself, as :meth:`server_socket` does; call before ``bind``.
        A socket the driver connects out (``server=False``) gets the message size limit only."""
        return self.engine.security.secure(sock, server=server)

    def submit(self, body: bytes | None, responder: Responder, meta: dict[str, Any] | None = None, *,
               timeout: float | None = None, urgent: bool = False) -> None:
        """Queue a job for this task. The responder always gets exactly one final answer, possibly
        at once (an error such as 503 when the queue is full).

        :param timeout: seconds from now after which the job answers 504 and is not started any more
            (default: the engine's ``request-timeout``, if any).
        :param urgent: put the job at the head of the queue.
        """
        self.engine.submit(self, body, meta or {}, responder, timeout=timeout, urgent=urgent)

    def open_job(self, responder: Responder, meta: dict[str, Any] | None = None, *, body: bytes | None = None,
                 stream: bool = False, timeout: float | None = None, urgent: bool = False,
                 on_credit: Callable[[int], None] | None = None) -> JobHandle:
        """Queue a job like :meth:`submit` and return its :class:`JobHandle`, which can cancel it
        (``handle.cancel(code, message)``: a client that left, say) and stream its request.

        :param body: the request body, or its first chunk when ``stream`` is true.
        :param stream: the request goes on in chunks: ``handle.push(chunk)``, then ``handle.close()``.
        :param timeout: and ``urgent``: as for :meth:`submit`.
        :param on_credit: called with a byte count each time the handler consumes a request chunk;
            a driver lets its source send at most ``REQUEST_WINDOW`` bytes beyond what was credited.
        """
        engine = self.engine
        job = engine.new_job(self, body, meta or {}, responder, timeout)
        handle = JobHandle(engine, job, stream=stream, on_credit=on_credit)
        engine.admit(self, job, urgent)
        return handle

    def publisher(self, meta: dict[str, Any] | None = None) -> Responder:
        """A responder that publishes the job's result on the app's pubsub endpoint."""
        return self.engine.publisher.responder(self.task, meta or {})
