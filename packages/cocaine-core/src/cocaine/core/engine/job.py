"""A job: one event to process, and the guarantee that its responder gets exactly one final answer."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from cocaine.core.plugin_api import Responder

if TYPE_CHECKING:
    from cocaine.core.engine.stats import TaskStats

log = logging.getLogger(__name__)


class Job:
    __slots__ = ("id", "task", "meta", "body", "responder", "stats", "accepted_at", "dispatched_at",
                 "deadline", "worker", "done", "handle", "ungranted")

    def __init__(self, job_id: int, task: str, body: bytes | None, meta: dict[str, Any],
                 responder: Responder, stats: TaskStats, timeout: float | None = None) -> None:
        self.id = job_id
        self.task = task
        self.body = body
        self.meta = meta
        self.responder = responder
        self.stats = stats
        self.accepted_at = time.monotonic()
        self.dispatched_at = 0.0
        self.deadline = None if timeout is None else self.accepted_at + timeout  # monotonic
        self.worker = None  # the worker running it, once dispatched
        self.done = False
        self.handle = None  # a JobHandle when the driver opened the job with TaskContext.open_job
        self.ungranted = 0  # response bytes received from the worker and not granted back yet

    def worker_meta(self) -> dict[str, Any]:
        """The metadata sent to the worker: the driver's, plus the deadline as Unix time, so that a
        worker never starts a job whose answer nobody waits for any more."""
        if self.deadline is None:
            return self.meta
        return {**self.meta, "deadline": time.time() + (self.deadline - time.monotonic())}

    # chunk, end and fail run for every job: each calls its responder inline, in a try of its own.
    def chunk(self, data: bytes) -> None:
        if not self.done:
            try:
                self.responder.chunk(data)
            except Exception:  # noqa: BLE001 - logged with its traceback
                self._failed()

    def reply_meta(self, meta: dict[str, Any]) -> None:
        """The handler's response metadata, for a responder that takes it (``meta``; others ignore it)."""
        if not self.done:
            method = getattr(self.responder, "meta", None)
            if method is not None:
                try:
                    method(meta)
                except Exception:  # noqa: BLE001 - logged with its traceback
                    self._failed()

    def reply(self, data: bytes) -> None:
        """A worker's ``reply``: the response's last chunk (most often its only one), then its end."""
        if not self.done:
            self.done = True
            self.stats.finished(self.accepted_at, None)
            responder, self.responder, self.handle = self.responder, None, None  # see release()
            try:
                responder.chunk(data)
                responder.end()
            except Exception:  # noqa: BLE001 - logged with its traceback
                self._failed()

    def end(self) -> None:
        if not self.done:
            self.done = True
            self.stats.finished(self.accepted_at, None)
            responder, self.responder, self.handle = self.responder, None, None  # see release()
            try:
                responder.end()
            except Exception:  # noqa: BLE001 - logged with its traceback
                self._failed()

    def fail(self, code: int, message: str) -> None:
        if not self.done:
            self.done = True
            self.stats.finished(self.accepted_at, int(code))
            responder, self.responder, self.handle = self.responder, None, None  # see release()
            try:
                responder.error(int(code), message)
            except Exception:  # noqa: BLE001 - logged with its traceback
                self._failed()

    def release(self) -> Responder:
        """Mark the job answered and return its responder, dropping the job's links to it and to its
        handle (``end`` and ``fail`` do the same inline). A driver's responder holds the handle,
        which holds the job: kept, those links would make every job a reference cycle, garbage that
        only Python's cyclic collector frees, whose collections then pause the reactor for
        milliseconds under load (docs/benchmarks.md, "HTTP"). Nothing reads them once ``done``."""
        self.done = True
        responder, self.responder, self.handle = self.responder, None, None
        return responder

    def _failed(self) -> None:
        # A broken responder (a driver bug) must not break the engine's bookkeeping for other jobs.
        log.exception("job %s of task %s: responder failed", self.id, self.task)
