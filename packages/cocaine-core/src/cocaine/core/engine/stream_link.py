"""The engine's end of a worker's stream link (docs/protocol.md, "Links").

A Unix stream socket pair per worker, made by the pool before the worker starts: the worker gets one
end (an inherited descriptor), the engine keeps this one. Protocol messages follow each other back to
back. Unlike the pool's ZeroMQ ROUTER, nothing runs between the engine's thread and the worker's: a
message costs one ``send`` and one ``recv`` system call per batch, and no ZeroMQ I/O thread wakes
up on either side (which on a 2-vCPU VM made a ZeroMQ round trip 4x a socket pair's).

The engine never blocks on it: what the kernel does not take yet waits here, and leaves when the
socket is writable again. The worker's flow control (credits and grants) bounds how much that is.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from cocaine.core.worker_protocol import StreamDecoder

if TYPE_CHECKING:
    from cocaine.core.engine.reactor import Reactor

#: What one ``recv`` may take: a whole batch of answers, or a large chunk in a few reads.
READ_SIZE = 256 * 1024


class StreamLink:
    __slots__ = ("sock", "fd", "reactor", "decoder", "unsent", "closed")

    def __init__(self, sock: socket.socket, reactor: Reactor) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.reactor = reactor
        self.decoder = StreamDecoder()
        self.unsent: bytearray | None = None  # what the kernel has not taken yet, in order
        self.closed = False

    def watch(self, on_readable: Callable[[], None]) -> None:
        self.reactor.add_reader(self.fd, on_readable)

    def receive(self) -> list | None:
        """Every whole message the worker has sent so far (decoded, not validated); None once the
        worker closed its end (it exited). Raises ProtocolError if the bytes are not the protocol."""
        recv = self.sock.recv
        messages: list = []
        while True:
            try:
                data = recv(READ_SIZE)
            except BlockingIOError:
                return messages
            except OSError:
                data = b""  # reset by a worker that died: the same as its end closed
            if not data:
                self.close()
                return messages or None
            messages += self.decoder.feed(data)
            if len(data) < READ_SIZE:
                return messages  # drained: spare the read that would say so

    def send(self, frames: list[bytes], start: int = 0) -> None:
        """Send ``frames[start:]``, each a packed protocol message; what the socket does not take
        now leaves when it can. A worker gone loses them: its exit answers its jobs."""
        if self.closed:
            return
        data = b"".join(frames[start:]) if len(frames) - start > 1 else frames[start]
        if self.unsent is not None:
            self.unsent += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.unsent = bytearray(memoryview(data)[sent:])
            self.reactor.add_writer(self.fd, self._on_writable)

    def _on_writable(self) -> None:
        unsent = self.unsent
        try:
            sent = self.sock.send(unsent)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del unsent[:sent]
        if not unsent:
            self.unsent = None
            self.reactor.remove_writer(self.fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.remove_reader(self.fd)
        if self.unsent is not None:
            self.unsent = None
            self.reactor.remove_writer(self.fd)
        self.sock.close()
