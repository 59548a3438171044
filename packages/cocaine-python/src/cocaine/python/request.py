"""The request object a Python handler receives, whole or streamed in chunks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class RequestCancelled(Exception):
    """The requester gave up (a deadline passed, the client left): the rest of the request will not come."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class Request:
    """One job's input: the body (bytes) and metadata from the driver (see docs/drivers.md).

    Iterating a request (``for chunk in request`` or ``async for chunk in request``) gives its body
    chunk by chunk; for a whole request that is the body, once (nothing for an empty body).
    """

    __slots__ = ("id", "task", "body", "meta")

    #: True when the request arrives in chunks while the handler runs (see :class:`StreamedRequest`).
    streamed = False

    def __init__(self, job_id: int, task: str, body: bytes | None, meta: dict[str, Any]) -> None:
        self.id = job_id
        self.task = task
        self.body = body or b""
        self.meta = meta

    def __bytes__(self) -> bytes:
        return self.body

    def read(self) -> bytes:
        return self.body

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding)

    def json(self) -> Any:
        return json.loads(self.body)

    def __iter__(self):
        if self.body:
            yield self.body

    async def __aiter__(self):
        if self.body:
            yield self.body

    def __repr__(self) -> str:
        return f"Request(task={self.task!r}, body={len(self.body)} bytes, meta={self.meta!r})"


class StreamedRequest(Request):
    """A request whose body is still arriving: iterate it to take chunks as they come.

    ``body``, ``read()``, ``text()`` and ``json()`` wait for the rest of the request and return all
    of it that was not taken by iteration yet. Taking a chunk lets the sender send that many more
    bytes (flow control), so a handler that reads slowly holds the sender back instead of filling
    memory. If the requester gives up, taking a chunk raises :class:`RequestCancelled`.
    """

    __slots__ = ("_source", "_rest")

    streamed = True

    def __init__(self, job_id: int, task: str, source: ChunkSource, meta: dict[str, Any]) -> None:
        self.id = job_id
        self.task = task
        self.meta = meta
        self._source = source
        self._rest: bytes | None = None

    @property
    def body(self) -> bytes:
        if self._rest is None:
            self._rest = b"".join(iter(self._source.take, None))
        return self._rest

    def __iter__(self):
        return iter(self._source.take, None)

    async def __aiter__(self):
        while True:
            chunk = await self._source.take_async()
            if chunk is None:
                return
            yield chunk

    def __repr__(self) -> str:
        return f"StreamedRequest(task={self.task!r}, meta={self.meta!r})"


class ChunkSource:
    """The chunks of one streamed request, fed by the worker's main loop and taken by the handler's
    thread; and the credit of its response, granted by the engine and spent by that thread.
    ``waiting`` is true while the handler waits here for the sender or for its client: that is not
    a hung handler (see the worker's heartbeat rules)."""

    def __init__(self, on_taken: Callable[[int], None], credit: int = 0) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._cancelled: RequestCancelled | None = None
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None
        self._on_taken = on_taken
        self._credit = credit  # bytes of response the handler may still send (docs/protocol.md, grant)
        self.waiting = False
        self.progress_at = time.monotonic()  # the handler's last sign of life (see PythonWorker._stuck)

    # -- the main loop ------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._wake()

    def end(self) -> None:
        with self._lock:
            self._ended = True
            self._wake()

    def grant(self, nbytes: int) -> None:
        with self._lock:
            self._credit += nbytes
            self._ready.notify_all()

    def cancel(self, code: int, message: str) -> None:
        with self._lock:
            self._cancelled = RequestCancelled(code, message)
            self._chunks.clear()
            self._wake()

    def _wake(self) -> None:
        self._ready.notify_all()
        if self._waiter is not None:
            loop, future = self._waiter
            self._waiter = None
            loop.call_soon_threadsafe(_resolve, future)

    # -- the handler's thread -----------------------------------------------------------------------
    def _next(self) -> bytes | None | bool:
        """A chunk, None at the end, or False if none is there yet (call with the lock held)."""
        if self._cancelled is not None:
            raise self._cancelled
        if self._chunks:
            return self._chunks.popleft()
        return None if self._ended else False

    def take(self) -> bytes | None:
        """The next chunk, or None once the request is complete; waits for the sender."""
        with self._lock:
            chunk = self._next()
            if chunk is False:
                self.waiting = True
                while (chunk := self._next()) is False:
                    self._ready.wait()
                self.waiting = False
        return self._taken(chunk)

    async def take_async(self) -> bytes | None:
        while True:
            with self._lock:
                chunk = self._next()
                if chunk is False:
                    loop = asyncio.get_running_loop()
                    future = loop.create_future()
                    self._waiter = (loop, future)
                    self.waiting = True
            if chunk is not False:
                return self._taken(chunk)
            try:
                await future
            finally:
                self.waiting = False

    def spend(self, nbytes: int) -> None:
        """Before sending a response chunk of ``nbytes``: wait while the response has no credit left
        (its client is behind); a chunk may overdraw it. Raises RequestCancelled once the requester
        gave up."""
        with self._lock:
            if self._credit <= 0 and self._cancelled is None:
                self.waiting = True
                while self._credit <= 0 and self._cancelled is None:
                    self._ready.wait()
                self.waiting = False
                self.progress_at = time.monotonic()
            if self._cancelled is not None:
                raise self._cancelled
            self._credit -= nbytes

    def _taken(self, chunk: bytes | None) -> bytes | None:
        self.progress_at = time.monotonic()
        if chunk is not None:
            self._on_taken(len(chunk))
        return chunk


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
