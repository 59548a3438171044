"""A Python worker: loads the app's module, then serves the engine's invokes until told to stop.

Run by the engine as ``python -m cocaine.python.worker --endpoint ... --id ... --path app.py``,
where the endpoint is the pool's ZeroMQ ROUTER or ``fd:N``, a stream link (link.py). The engine <->
worker protocol is specified in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import threading
import time
from collections import deque
from types import ModuleType

import zmq

from cocaine.core import worker_protocol
from cocaine.core.errors import Code, ProtocolError
from cocaine.python import logs
from cocaine.python.link import open_link, StreamLink, ZeroMQLink
from cocaine.python.loader import become_runtime, load_module, runtime_arguments
from cocaine.python.request import ChunkSource, Request, RequestCancelled, StreamedRequest
from cocaine.python.response import Response

EXIT_LOAD_FAILED = 3
POLLIN = int(zmq.POLLIN)
ENGINE_SILENCE_LIMIT = 3  # heartbeat intervals without a word from the engine before giving up
BATCH_DELAY = 0.001  # seconds the replies of a batch's first jobs may wait for the rest of it
#: Seconds without a job before the handback watchdog stops looking every handback-after and sleeps
#: until a job starts: a busy worker never pays a thread wake-up per job, an idle one costs nothing.
WATCHDOG_PARK_AFTER = 1.0


class Handlers:
    """The app's handlers by task name, each wrapped once to take a request or nothing."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self._cache: dict = {}

    def get(self, task: str):
        handler = self._cache.get(task)
        if handler is None:
            target = getattr(self.module, task, None)
            if not callable(target):
                return None
            handler = self._cache[task] = _adapt(target)
        return handler


def _adapt(target):
    try:
        takes_request = bool(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        takes_request = True
    return target if takes_request else (lambda _request: target())


class PythonWorker:
    """The main loop: receives the engine's messages, runs whole requests inline, and sends output.

    A request that streams in (``invoke`` with ``closed`` false) runs its handler on a thread of its
    own, so that the main loop can go on feeding it chunks; its output comes back through
    :meth:`post`. Responses are paced by the engine's grants (docs/protocol.md): a whole request's
    streamed response that runs out of credit is parked (its iterator set aside) and resumed when
    credit comes, so that other jobs run meanwhile; a handler thread waits for credit instead.

    Heartbeats (docs/protocol.md): the worker sends one whenever it has sent nothing for a heartbeat
    interval, and goes silent while a handler is stuck, so that the engine's heartbeat timeout
    catches it. A whole request's handler runs on the main loop, which is silent while it runs; a
    streamed request's handler counts as stuck once it has gone a heartbeat interval without taking
    a request chunk or producing a response chunk (waiting for the sender's next chunk, or for
    credit, is not stuck). While one is stuck, the worker holds all its output.

    Handback (docs/pools.md): once the engine offers it (``options``), a watchdog thread hands the
    engine back the whole requests still queued (``pending``) when the running job has run past
    ``handback-after``. The main loop takes the next message from ``pending`` and marks a job started
    under the same lock, so a job is either started here or handed back, never both. The watchdog
    uses the socket only while a job runs, under that lock; the main loop takes it for every send.
    A parked response resumed by a grant counts as running too: what waits behind it may go back.
    """

    def __init__(self, link: ZeroMQLink | StreamLink, handlers: Handlers, heartbeat: float) -> None:
        self.link = link
        self.handlers = handlers
        self.heartbeat = heartbeat
        self.out: list[bytes] = []
        self.last_heard = self.last_sent = time.monotonic()
        self.streams: dict[int, StreamedJob] = {}
        self.parked: dict[int, ParkedResponse] = {}  # responses waiting for the engine's grant
        self._loop: asyncio.AbstractEventLoop | None = None  # for async handlers of whole requests
        # Output of handler threads, handed to the main loop.
        self._lock = threading.Lock()
        self._posted: list[bytes] = []
        self._finished: list[int] = []
        self._signalled = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._poller = zmq.Poller()
        self._poller.register(link.pollable, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self.logs: logs.LogForwarder | None = None  # the app's log records, sent with the next output
        # Handback: messages received but not applied yet (the jobs not started), and who may
        # touch them and the socket.
        self.pending: deque[list] = deque()
        self._guard = threading.Lock()  # taken directly on the hot path: cheaper than the Condition's own
        self._state = threading.Condition(self._guard)  # the watchdog's, to sleep on
        self.running_since: float | None = None  # when the job being run started
        self.handback_after: float | None = None  # offered by the engine
        self.replies = False  # the engine takes a whole response as one reply message (offered)
        self._watchdog: threading.Thread | None = None
        self._parked = False  # the watchdog waits for a job to start
        self._closing = False

    def run(self) -> None:
        try:
            self._serve()
        finally:
            if self._watchdog is not None:
                with self._state:
                    self._closing = True
                    self._state.notify()
                self._watchdog.join()
            for stream in self.streams.values():  # no handler thread waits for chunks that will not come
                stream.source.cancel(Code.UNAVAILABLE, "the worker is stopping")
            for parked in self.parked.values():
                parked.items.close()
            for fd in (self._wake_r, self._wake_w):  # a thread-backend worker must not leak them
                os.close(fd)
            if self._loop is not None:
                self._loop.close()

    def _serve(self) -> None:
        link = self.link
        link.send(worker_protocol.hello(os.getpid()))
        heartbeat = self.heartbeat
        only_link = [(link.pollable, POLLIN)]
        while True:
            # Until the next heartbeat is due; while a handler is stuck, look again now and then.
            wait = max(heartbeat / 10, self.last_sent + heartbeat - time.monotonic())
            # zmq_poll on a ready-made list: Socket.poll builds a Poller each call (9 against 3 us).
            readable = self._wait(wait) if self.streams else zmq.zmq_poll(only_link, int(wait * 1000))
            if readable:
                self.last_heard = time.monotonic()
                try:
                    with self._guard:
                        self._receive()
                except EOFError:
                    return  # the engine is gone, or has given up on this worker
                if not self._apply_pending():
                    self.flush()
                    return
            elif time.monotonic() - self.last_heard > ENGINE_SILENCE_LIMIT * heartbeat:
                return  # the engine is gone
            self.flush()

    def _receive(self) -> bool:
        """Move what the engine sent into ``pending``; True if there was anything. Hold ``_guard``.
        Raises EOFError when a stream link is over."""
        return self.link.receive(self.pending, self._dropped)

    def _dropped(self, e: ProtocolError) -> None:
        """Drop a bad message, say so, serve on."""
        self.out.append(worker_protocol.log(logging.WARNING, f"dropped a bad message: {e}"))

    def _apply_pending(self) -> bool:
        """Apply the pending messages in order; False when the worker must stop."""
        pending = self.pending
        guard = self._guard
        handle = self.handle
        monotonic = time.monotonic
        invoke = worker_protocol.INVOKE
        grant = worker_protocol.GRANT
        batch_started = None  # when the jobs whose replies are still in ``out`` began to run
        while True:
            with guard:
                if not pending:
                    self.running_since = None
                    return True
                message = pending.popleft()
                # A grant may resume a parked response, whose handler then runs like a job's.
                runs = message[0] == invoke or message[0] == grant
                now = monotonic() if runs else None
                if runs and self.handback_after is not None:
                    self.running_since = now  # from now on the job is this worker's to run
                    if self._parked:
                        self._parked = False
                        self._state.notify()
                else:
                    self.running_since = None
            if runs:
                # The replies of quick jobs leave together, after the batch; after a slow handler
                # they leave before the next one starts (as in every runtime: docs/protocol.md).
                if batch_started is None:
                    batch_started = now
                elif now - batch_started > BATCH_DELAY and self.out:
                    self.flush()
                    batch_started = now
            if not handle(message):
                return False

    def _watch(self) -> None:
        """The watchdog: hand back the whole requests queued behind a job that runs too long, and
        any that arrive while it still runs (the engine sent them before it saw the job stall)."""
        state = self._state
        after = self.handback_after
        idle_since = None
        with state:
            while not self._closing:
                started = self.running_since
                if started is None:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since < WATCHDOG_PARK_AFTER:
                        state.wait(after)
                    else:
                        self._parked = True
                        state.wait()
                        idle_since = None
                    continue
                idle_since = None
                left = started + after - time.monotonic()
                if left > 0:
                    state.wait(left)
                    continue
                self._hand_back()
                state.wait(after)

    def _hand_back(self) -> None:
        """Drop the whole requests not started yet and tell the engine; send the answers of the jobs
        that ran before the long one, which would otherwise wait for it with the rest of their batch.
        Hold ``_guard``. A streamed request stays: its chunks came here and cannot be sent again."""
        try:
            if self._receive():
                self.last_heard = time.monotonic()  # what it read shows the engine alive, as the main loop's would
        except EOFError:
            return  # the main loop sees it too, and ends the worker
        jobs = [m[1] for m in self.pending if m[0] == worker_protocol.INVOKE and m[5] is True]
        if jobs:
            kept = [m for m in self.pending if not (m[0] == worker_protocol.INVOKE and m[5] is True)]
            self.pending.clear()
            self.pending.extend(kept)
            self.link.send(worker_protocol.handback(jobs))
        # The main loop appends to ``out`` without the lock (and sends it under the lock): send what
        # is there now, and only that; what it appends meanwhile stays, and leaves after it. Not
        # while a streamed request's handler is stuck: the worker goes silent then, as flush() does.
        out = self.out
        ready = len(out)
        if ready and not (self.streams and self._stuck(time.monotonic())):
            self.link.send_all(out[:ready])
            del out[:ready]

    def flush(self) -> None:
        """Send what is pending, or a heartbeat if nothing was sent for an interval; neither while a
        streamed request's handler is stuck."""
        now = time.monotonic()
        if self.streams and self._stuck(now):
            return
        if self.logs is not None and self.logs.pending:
            self.out.extend(self.logs.collect())
        if self.out:
            with self._guard:  # the watchdog may be using the socket
                self.link.send_all(self.out)
                self.out.clear()  # in place: invoke() holds a reference to this list
            self.last_sent = now
        elif now - self.last_sent >= self.heartbeat:
            with self._guard:
                self.link.send(worker_protocol.HEARTBEAT_FRAME)
            self.last_sent = now

    def handle(self, message: list) -> bool:
        """Apply one engine message; False when the worker must stop."""
        kind = message[0]
        if kind == worker_protocol.INVOKE:
            job, task, meta, body, closed = message[1:6]  # shape checked by unpack; extra fields ignored
            if closed:
                self.invoke(job, task, meta, body)
            else:
                self.start_stream(job, task, meta, body)
        elif kind == worker_protocol.CHUNK:
            stream = self.streams.get(message[1])
            if stream is not None:
                stream.source.feed(message[2])
        elif kind == worker_protocol.END:
            stream = self.streams.get(message[1])
            if stream is not None:
                stream.source.end()
        elif kind == worker_protocol.GRANT:
            job = message[1]
            parked = self.parked.get(job)
            if parked is not None:
                parked.credit += message[2]
                if parked.credit > 0:
                    del self.parked[job]
                    self.respond(job, parked.task, parked.items, parked.credit)
            else:
                stream = self.streams.get(job)
                if stream is not None:
                    stream.source.grant(message[2])
        elif kind == worker_protocol.ERROR:  # the engine gave up on a job: a streamed request fails
            job = message[1]
            stream = self.streams.get(job)
            if stream is not None:
                stream.source.cancel(message[2], message[3])
            parked = self.parked.pop(job, None)
            if parked is not None:  # its client is gone: stop the handler, answer to free the job
                parked.items.close()
                self.out.append(worker_protocol.error(job, message[2], message[3]))
        elif kind == worker_protocol.TERMINATE:
            for job, parked in self.parked.items():
                parked.items.close()
                self.out.append(worker_protocol.error(job, Code.UNAVAILABLE, "the worker is stopping"))
            self.parked.clear()
            return False
        elif kind == worker_protocol.OPTIONS:
            self._offered(message[1])
        return True

    def _offered(self, options: dict) -> None:
        self.replies = options.get("reply") is True
        after = options.get("handback-after")
        if type(after) in (int, float) and after > 0 and self._watchdog is None:
            self.handback_after = float(after)
            self._watchdog = threading.Thread(target=self._watch, name="handback", daemon=True)
            self._watchdog.start()

    def invoke(self, job: int, task: str, meta: dict, body: bytes | None) -> None:
        out = self.out
        handler = self._handler_for(job, task, meta)
        if handler is None:
            return
        try:
            result = handler(Request(job, task, body, meta))
            if type(result) is bytes:  # the common case first
                whole = result
            elif result is None:
                whole = None
            elif isinstance(result, (bytes, bytearray, memoryview, str)):
                whole = _to_bytes(result)
            elif isinstance(result, Response) and isinstance(result.body, (bytes, bytearray, memoryview, str)):
                out.append(worker_protocol.meta(job, result.meta()))  # whole: leaves with its body
                whole = _to_bytes(result.body)
            else:
                # Stream: each chunk leaves as soon as the handler produces it, while it has credit.
                items = chunks_of(result, self._run, lambda meta: out.append(worker_protocol.meta(job, meta)))
                self.respond(job, task, items, worker_protocol.RESPONSE_WINDOW)
                return
        except Exception as e:  # noqa: BLE001 - the app's error becomes this request's error reply
            self._failed(job, task, e)
            return
        if whole is not None and self.replies:
            out.append(worker_protocol.reply(job, whole))  # one message where chunk and end make two
            return
        if whole is not None:
            out.append(worker_protocol.chunk(job, whole))
        out.append(worker_protocol.end(job))

    def respond(self, job: int, task: str, items, credit: int) -> None:
        """Send a streamed response's chunks while it has ``credit`` (a chunk may overdraw it), then
        its end; park it when the credit runs out, until the engine grants more."""
        out = self.out
        try:
            while credit > 0:
                item = next(items, None)
                if item is None:
                    break
                out.append(worker_protocol.chunk(job, item))
                credit -= len(item)
                self.flush()
            else:
                self.parked[job] = ParkedResponse(task, items, credit)
                return
        except Exception as e:  # noqa: BLE001 - the app's error becomes this request's error reply
            self._failed(job, task, e)
            return
        out.append(worker_protocol.end(job))

    def _failed(self, job: int, task: str, e: Exception) -> None:
        """Answer a job whose handler raised: its traceback as a log line, then its error."""
        self.out.append(logs.app_error(job, task, e))
        self.out.append(app_error(job, task, e))

    def _handler_for(self, job: int, task: str, meta: dict):
        """The handler to run the job with, or None once the job is answered with an error."""
        deadline = meta.get("deadline")
        if deadline is not None and type(deadline) in (int, float) and time.time() > deadline:
            self.out.append(worker_protocol.error(job, Code.TIMEOUT, "deadline exceeded before the job started"))
            return None
        handler = self.handlers.get(task)
        if handler is None:
            self.out.append(worker_protocol.error(job, Code.APP, f"the app has no callable {task!r}"))
        return handler

    def _run(self, awaitable):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    # -- streamed requests ------------------------------------------------------------------------
    def start_stream(self, job: int, task: str, meta: dict, body: bytes | None) -> None:
        handler = self._handler_for(job, task, meta)
        if handler is None:
            return
        stream = self.streams[job] = StreamedJob(self, job, task, meta, handler)
        if body:
            stream.source.feed(body)
        stream.thread.start()

    def post(self, frame: bytes, finished: int | None = None) -> None:
        """From a handler thread: queue a frame for the main loop to send, and wake it."""
        with self._lock:
            self._posted.append(frame)
            if finished is not None:
                self._finished.append(finished)
            if not self._signalled:
                self._signalled = True
                os.write(self._wake_w, b"\0")

    def _wait(self, timeout: float) -> bool:
        """Poll the engine socket and the handler threads' wake-up pipe; collect the threads' output.
        True if the engine socket is readable."""
        ready = dict(self._poller.poll(timeout * 1000))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        with self._lock:
            self.out.extend(self._posted)
            self._posted.clear()
            for job in self._finished:
                self.streams.pop(job, None)
            self._finished.clear()
            self._signalled = False
        return self.link.pollable in ready

    def _stuck(self, now: float) -> bool:
        limit = self.heartbeat
        # A copy: the watchdog asks too, while the main loop may be adding or ending a stream.
        return any(not s.source.waiting and now - s.source.progress_at > limit for s in list(self.streams.values()))


class ParkedResponse:
    """A whole request's streamed response that ran out of credit: its chunk iterator, set aside."""

    __slots__ = ("task", "items", "credit")

    def __init__(self, task: str, items, credit: int) -> None:
        self.task = task
        self.items = items
        self.credit = credit


class StreamedJob:
    """A handler running on its own thread, reading its request as the chunks arrive."""

    def __init__(self, worker: PythonWorker, job: int, task: str, meta: dict, handler) -> None:
        self.worker = worker
        self.job = job
        self.task = task
        self.handler = handler
        self.source = ChunkSource(lambda n: worker.post(worker_protocol.credit(job, n)),
                                  credit=worker_protocol.RESPONSE_WINDOW)
        self.request = StreamedRequest(job, task, self.source, meta)
        self.thread = threading.Thread(target=self.run, name=f"job-{job}", daemon=True)

    def run(self) -> None:
        job, post, source = self.job, self.worker.post, self.source
        loop = None

        def run_async(awaitable):
            nonlocal loop
            if loop is None:
                loop = asyncio.new_event_loop()
            return loop.run_until_complete(awaitable)

        try:
            def on_meta(meta):
                post(worker_protocol.meta(job, meta))

            for item in chunks_of(self.handler(self.request), run_async, on_meta):
                source.spend(len(item))  # waits while the client is a window behind
                source.progress_at = time.monotonic()
                post(worker_protocol.chunk(job, item))
            final = worker_protocol.end(job)
        except RequestCancelled as e:
            final = worker_protocol.error(job, e.code, e.message)
        except Exception as e:  # noqa: BLE001 - the app's error becomes this request's error reply
            post(logs.app_error(job, self.task, e))
            final = app_error(job, self.task, e)
        finally:
            if loop is not None:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
        post(final, finished=job)


def chunks_of(result, run_async, on_meta):
    """The response chunks (bytes) of a handler's result: None, bytes or str, an iterable or async
    iterable of those, a :class:`Response` holding one, or a coroutine returning one of those.
    ``run_async`` runs an awaitable; ``on_meta`` gets a Response's metadata before any chunk."""
    if inspect.iscoroutine(result):
        result = run_async(result)
    if isinstance(result, Response):
        on_meta(result.meta())
        result = result.body
    if result is None:
        return
    if isinstance(result, (bytes, bytearray, memoryview, str)):
        yield _to_bytes(result)
    elif hasattr(result, "__iter__"):
        for item in result:
            yield _to_bytes(item)
    elif hasattr(result, "__anext__"):
        try:
            while True:
                try:
                    item = run_async(result.__anext__())
                except StopAsyncIteration:
                    return
                yield _to_bytes(item)
        finally:
            if hasattr(result, "aclose"):
                run_async(result.aclose())
    else:
        raise TypeError(f"handler returned {type(result).__name__}; "
                        "expected bytes, str, None or an iterable of them")


def app_error(job: int, task: str, e: Exception) -> bytes:
    """The error reply of a handler that raised (its traceback goes as a log message: logs.app_error)."""
    return worker_protocol.error(job, Code.APP, f"{type(e).__name__}: {e}")


def _to_bytes(item) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"handler produced {type(item).__name__}; expected bytes or str")


def serve(context: zmq.Context | None, *, endpoint: str, worker_id: str, path: str, heartbeat: float,
          own_process: bool = False, module: ModuleType | None = None,
          forwarder: logs.LogForwarder | None = None) -> int:
    """Load the app (unless ``module`` is the app, loaded already by a fork server, whose
    ``forwarder`` holds what the import logged) and serve the engine until told to stop; return the
    exit status. ``context`` is needed only over ZeroMQ (not for an ``fd:N`` endpoint)."""
    link = open_link(context, endpoint, worker_id)
    if forwarder is None:
        forwarder = logs.LogForwarder.install(own_process=own_process)
    try:
        if module is None:
            try:
                module = load_module(path, worker_id)
            except BaseException as e:  # noqa: BLE001 - SystemExit at import is a failed load too
                link.send_all([*forwarder.collect(), logs.load_failure(path, e)])
                return EXIT_LOAD_FAILED
        worker = PythonWorker(link, Handlers(module), heartbeat)
        worker.logs = forwarder
        worker.run()
        return 0
    finally:
        forwarder.uninstall()
        link.close()


def main(argv: list[str] | None = None) -> int:
    args = runtime_arguments(__doc__, ("--id", {})).parse_args(argv)
    become_runtime()
    context = None if args.endpoint.startswith("fd:") else zmq.Context()
    try:
        return serve(context, endpoint=args.endpoint, worker_id=args.id, path=args.path, heartbeat=args.heartbeat,
                     own_process=True)
    finally:
        if context is not None:
            context.term()


if __name__ == "__main__":
    sys.exit(main())
