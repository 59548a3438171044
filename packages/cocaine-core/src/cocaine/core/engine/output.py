"""What process workers write to stdout and stderr, read line by line on one thread of the daemon.

Not on the engines' reactors: their poll loop would grow by two descriptors per worker, a cost every
request pays (about 0.07 µs per descriptor per poll, measured on the 2 vCPU VM). Lines are queued on
the worker's :class:`OutputWatch` and handed to its engine's reactor, which logs and publishes them
in order; :meth:`OutputWatch.close` reads what is left on the reactor itself, so that a dying
worker's last words come before its exit is reported.
"""

from __future__ import annotations

import os
import selectors
import threading
from collections import deque
from collections.abc import Callable

#: A line longer than this is cut into several.
MAX_LINE = 16 * 1024
_READ_SIZE = 65536


class OutputWatch:
    """One worker's output pipes. ``deliver(stream, line)`` runs on the engine's reactor."""

    def __init__(self, reader: OutputReader, reactor, fds: dict[str, int],
                 deliver: Callable[[str, str], None]) -> None:
        self.reader = reader
        self.reactor = reactor
        self.deliver = deliver
        self.streams = {fd: name for name, fd in fds.items()}  # still open
        self.partial = {fd: b"" for fd in self.streams}
        self.lines: deque[tuple[str, str]] = deque()  # read, not yet delivered (appends are thread-safe)

    def read(self, fd: int) -> bool:
        """Queue the complete lines ``fd`` holds now; False once it is at its end (and closed)."""
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                self._queue(fd, self.partial.pop(fd, b""))
                self.reader.forget(fd)
                del self.streams[fd]
                os.close(fd)
                return False
            *lines, rest = (self.partial[fd] + data).split(b"\n")
            for line in lines:
                self._queue(fd, line)
            while len(rest) > MAX_LINE:
                self._queue(fd, rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
            self.partial[fd] = rest

    def _queue(self, fd: int, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line:
            self.lines.append((self.streams[fd], line.decode(errors="replace")))

    def flush(self) -> None:
        """On the reactor: deliver the queued lines, in order."""
        lines = self.lines
        while lines:
            self.deliver(*lines.popleft())

    def close(self) -> None:
        """On the reactor, once the worker has exited: read what is left, deliver it, close the pipes
        (a descendant of the worker that still holds them loses what it writes after this)."""
        with self.reader.lock:
            for fd in list(self.streams):
                if self.read(fd):  # still open: a descendant holds it
                    self._queue(fd, self.partial.pop(fd))
                    self.reader.forget(fd)
                    del self.streams[fd]
                    os.close(fd)
        self.flush()


class OutputReader:
    """The thread that reads every watched pipe; started with the first watch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_w = -1

    def watch(self, reactor, fds: dict[str, int], deliver: Callable[[str, str], None]) -> OutputWatch:
        """Read ``fds`` (stream name -> pipe; the watch owns and closes them) for one worker."""
        watch = OutputWatch(self, reactor, fds, deliver)
        with self.lock:
            if self._selector is None:
                self._start()
            for fd in watch.streams:
                os.set_blocking(fd, False)
                self._selector.register(fd, selectors.EVENT_READ, watch)
        try:
            os.write(self._wake_w, b"\0")  # a selector other than epoll sees new descriptors on its next call
        except BlockingIOError:
            pass  # wake-ups are pending already
        return watch

    def forget(self, fd: int) -> None:
        """Stop watching ``fd``; the caller holds :attr:`lock` and closes it."""
        self._selector.unregister(fd)

    def _start(self) -> None:
        self._selector = selectors.DefaultSelector()
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._run, args=(wake_r,), name="worker-output", daemon=True).start()

    def _run(self, wake_r: int) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                watch: OutputWatch = key.data
                with self.lock:
                    if key.fd not in watch.streams:
                        continue  # closed by the reactor meanwhile
                    watch.read(key.fd)
                if watch.lines:
                    try:
                        watch.reactor.call_soon_threadsafe(watch.flush)
                    except OSError:
                        pass  # the engine is gone


#: The daemon's one reader.
READER = OutputReader()
