"""A small single-threaded event loop over ``zmq.Poller``.

Why not asyncio: one ``await`` per message on ``zmq.asyncio`` costs about three times what a plain
poll loop that drains every ready socket costs (see docs/architecture.md). Handlers registered here
are called once per wake-up and are expected to drain their socket with non-blocking receives.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import zmq

log = logging.getLogger(__name__)

POLLOUT = int(zmq.POLLOUT)


class Timer:
    """A pending call; ``cancel()`` makes it a no-op."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable, args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    """Runs callbacks for ready sockets and file descriptors, timers, and calls from other threads."""

    def __init__(self, name: str = "reactor") -> None:
        self.name = name
        self._poller = zmq.Poller()
        self._handlers: dict = {}
        self._writers: dict = {}
        self._timers: list = []
        self._seq = itertools.count()
        self._calls: deque = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._handlers[self._wake_r] = self._drain_wakeups
        self._running = False
        # Sources newly watched while a poll round's events are dispatched: an event of that round
        # for the same number was the previous descriptor's (closed and its number reused since).
        self._fresh: set = set()
        self._flushers: list[Callable[[], None]] = []
        self._last_flushers: set[Callable[[], None]] = set()
        self.thread: threading.Thread | None = None

    # -- registration (reactor thread only) ---------------------------------------------------
    def add_reader(self, source, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``source`` (a zmq socket or an fd) is readable."""
        if source not in self._handlers and source not in self._writers:
            self._fresh.add(source)
        self._handlers[source] = callback
        self._poller.register(source, zmq.POLLIN | (zmq.POLLOUT if source in self._writers else 0))

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever the file descriptor ``fd`` is writable (remove it once the
        output is flushed, or the loop spins)."""
        if fd not in self._handlers and fd not in self._writers:
            self._fresh.add(fd)
        self._writers[fd] = callback
        self._poller.register(fd, zmq.POLLOUT | (zmq.POLLIN if fd in self._handlers else 0))

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            if fd in self._handlers:
                self._poller.register(fd, zmq.POLLIN)
            else:
                self._poller.unregister(fd)

    def add_flusher(self, callback: Callable[[], None], *, last: bool = False) -> None:
        """Call ``callback()`` once per loop round before polling, so output can be batched per round.
        ``last`` flushers run after the others: a driver's flush may queue messages for workers
        (grants for the response bytes it wrote), which must leave in the same round."""
        if last:
            self._last_flushers.add(callback)
            self._flushers.append(callback)
        else:  # before the last ones, which stay at the end
            self._flushers.insert(len(self._flushers) - len(self._last_flushers), callback)

    def remove_flusher(self, callback: Callable[[], None]) -> None:
        if callback in self._flushers:
            self._flushers.remove(callback)
        self._last_flushers.discard(callback)

    def remove_reader(self, source) -> None:
        if self._handlers.pop(source, None) is not None:
            if source in self._writers:
                self._poller.register(source, zmq.POLLOUT)
            else:
                self._poller.unregister(source)

    def call_later(self, delay: float, callback: Callable, *args) -> Timer:
        return self.call_at(time.monotonic() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable, *args) -> Timer:
        timer = Timer(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    # -- from any thread -------------------------------------------------------------------------
    def call_soon_threadsafe(self, callback: Callable, *args) -> None:
        self._calls.append((callback, args))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def stop(self) -> None:
        self.call_soon_threadsafe(self._stop)

    # -- the loop --------------------------------------------------------------------------------
    def _stop(self) -> None:
        self._running = False

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_calls(self) -> None:
        calls = self._calls
        while calls:
            callback, args = calls.popleft()
            self._guard(callback, args)

    def _run_timers(self) -> float | None:
        """Run due timers; return seconds until the next one (None if there is none)."""
        timers = self._timers
        while timers:
            when, _, timer = timers[0]
            if timer.cancelled:
                heapq.heappop(timers)
                continue
            delay = when - time.monotonic()
            if delay > 0:
                return delay
            heapq.heappop(timers)
            self._guard(timer.callback, timer.args)
        return None

    def _guard(self, callback: Callable, args: tuple) -> None:
        # One faulty callback must not take the whole app down with it.
        try:
            callback(*args)
        except Exception:
            log.exception("%s: unhandled error in %r", self.name, callback)

    def run(self) -> None:
        self._running = True
        poll = self._poller.poll
        handlers = self._handlers
        flushers = self._flushers
        fresh = self._fresh
        while self._running:
            self._run_calls()
            delay = self._run_timers()
            # Output batched by the callbacks above leaves before the loop blocks again.
            for flush in flushers:
                self._guard(flush, ())
            if self._calls or not self._running:
                delay = 0  # never block once stopped: the wake-up that asked for it may be drained already
            timeout = None if delay is None else max(0, int(delay * 1000 + 0.999))
            fresh.clear()  # what is watched now is what this round polls
            for source, events in poll(timeout):
                if fresh and source in fresh:
                    continue  # stale: watched since the poll (level-triggered: the next round reports it)
                if events & POLLOUT:
                    self._on_writable(source)
                    if events == POLLOUT:
                        continue
                handler = handlers.get(source)
                if handler is not None:
                    try:
                        handler()
                    except Exception:
                        log.exception("%s: unhandled error in handler for %r", self.name, source)

    def _on_writable(self, fd) -> None:
        writer = self._writers.get(fd)
        if writer is not None:
            self._guard(writer, ())

    def start_thread(self) -> threading.Thread:
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self.thread.start()
        return self.thread

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
