"""What a driver holds for a job it opened with :meth:`TaskContext.open_job`: a streamed request, and
cancelling.

A streamed request (``stream=True``) is sent to its worker as an ``invoke`` whose ``closed`` flag is
false, then as ``chunk`` messages and one ``end`` (docs/protocol.md). Chunks pushed before the job
reaches a worker wait on the handle and leave with the ``invoke``; if the request is complete by
then, the worker gets it whole.

Flow control is end to end and counted in bytes: the worker reports each request chunk its handler
consumes (``credit``) and the handle passes it to the driver's ``on_credit``. A driver lets its
source send at most :data:`~cocaine.core.plugin_api.REQUEST_WINDOW` bytes beyond what was credited,
so a streamed request holds at most that much memory wherever it waits (driver, engine, worker),
however slow the handler.

Responses flow the other way under the same kind of credit: a worker sends at most
:data:`~cocaine.core.worker_protocol.RESPONSE_WINDOW` bytes of a job's response beyond what the
engine granted (``grant``). A driver that opened the job ``paced`` reports each response byte it
has passed on to its client (``drained``) and the handle grants it back to the worker, so a slow
client slows its handler down instead of filling the daemon. Other responses are granted back as
they arrive (the pool does it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cocaine.core import worker_protocol

if TYPE_CHECKING:
    from cocaine.core.engine.job import Job
    from cocaine.core.engine.pool import WorkerPool

class JobHandle:
    """A job as the driver that opened it sees it (:class:`cocaine.core.plugin_api.JobHandle`). Use
    only from the reactor thread. ``withdraw(job)`` takes a job that has not reached a worker out of
    the engine's queue."""

    __slots__ = ("withdraw", "job", "stream", "closed", "pending", "on_credit", "pool", "paced", "remote",
                 "streamed")

    def __init__(self, job: Job, withdraw: Callable[[Job], None], *, stream: bool,
                 on_credit: Callable[[int], None] | None, paced: bool = False) -> None:
        self.withdraw = withdraw
        self.job = job
        self.stream = stream
        self.closed = not stream  # no more request chunks will come
        self.pending: list[bytes] = []  # request chunks waiting for the job to reach a worker
        self.on_credit = on_credit
        self.pool: WorkerPool | None = None  # the pool of the worker running the job, once dispatched
        self.paced = paced  # the driver calls drained() as its client takes the response
        #: Where the job runs when a cluster peer runs it (engine.overflow "forward"): takes the
        #: request's further chunks, its end and a cancel (``push``, ``close``, ``cancel``).
        self.remote = None
        self.streamed = False  # it reached its worker before the request was complete
        job.handle = self

    @property
    def done(self) -> bool:
        """True once the job was answered (or refused, or cancelled): further chunks are dropped."""
        return self.job.done

    def push(self, data: bytes) -> None:
        """Add a chunk to the streamed request. Dropped once the job is done or the request closed."""
        job = self.job
        if self.closed or job.done or not data:
            return
        if self.pool is not None:
            self.pool.send_to(job.worker, worker_protocol.chunk(job.id, data))
        elif self.remote is not None:
            self.remote.push(data)
        else:
            self.pending.append(data)

    def close(self) -> None:
        """The streamed request is complete."""
        if self.closed:
            return
        self.closed = True
        job = self.job
        if job.done:
            return
        if self.pool is not None:
            self.pool.send_to(job.worker, worker_protocol.end(job.id))
        elif self.remote is not None:
            self.remote.close()

    def drained(self, nbytes: int) -> None:
        """The driver passed ``nbytes`` more bytes of the response on to its client (a ``paced``
        job): the worker may send that much more."""
        job = self.job
        if not job.done and self.pool is not None and nbytes > 0:
            self.pool.send_to(job.worker, worker_protocol.grant(job.id, nbytes))

    def cancel(self, code: int, message: str) -> None:
        """Give up on the job: it is answered with ``(code, message)`` at once (the responder's
        ``error``). A queued job leaves the queue; a running job's worker is told with an ``error``
        message, so a handler reading a streamed request sees it fail."""
        job = self.job
        if job.done:
            return
        self.closed = True
        self.pending = []
        if self.remote is not None:
            self.remote.cancel(code, message)
        elif self.pool is None:
            self.withdraw(job)
        else:
            # The job keeps its place in the worker's credit until the worker answers it.
            self.pool.send_to(job.worker, worker_protocol.error(job.id, code, message))
        job.fail(code, message)

    # -- called by the pool -------------------------------------------------------------------------
    def dispatching(self, pool: WorkerPool) -> bool:
        """The job is about to be invoked on a worker of ``pool``: its body is what was pushed so
        far. Returns ``closed``."""
        self.pool = pool
        if self.pending:
            job = self.job
            # The body the job was opened with (a native request's first chunk) comes first.
            chunks = [job.body, *self.pending] if job.body else self.pending
            job.body = b"".join(chunks) if len(chunks) > 1 else chunks[0]
            self.pending = []
        self.streamed = not self.closed
        return self.closed

    def credited(self, nbytes: int) -> None:
        if self.on_credit is not None and not self.job.done:
            self.on_credit(nbytes)
