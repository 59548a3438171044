"""The worker's end of its link to the engine (docs/protocol.md, "Links"): a ZeroMQ DEALER connected
to the pool's ROUTER (``--endpoint ipc://...``), or a stream link, a Unix stream socket the worker
inherited (``--endpoint fd:N``), with no ZeroMQ context in the worker at all.

Either way the worker sends whole batches (one message per ZeroMQ frame, or back to back on the
stream), and receives without waiting: ``receive`` takes whatever has arrived.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import zmq

from cocaine.core import worker_protocol
from cocaine.core.errors import ProtocolError
from cocaine.core.transport import recv_frames, send_frames

#: What one read of a stream link may take.
READ_SIZE = 256 * 1024


def open_link(context: zmq.Context | None, endpoint: str, worker_id: str) -> ZeroMQLink | StreamLink:
    if endpoint.startswith("fd:"):
        return StreamLink(int(endpoint[3:]))
    sock = context.socket(zmq.DEALER)
    sock.identity = worker_id.encode()
    sock.linger = 1000  # the last replies (or a load failure's log message) leave before the exit
    sock.connect(endpoint)
    return ZeroMQLink(sock)


class ZeroMQLink:
    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.pollable = sock  # what zmq_poll watches

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def send_all(self, frames: list[bytes]) -> None:
        send_frames(self.sock, frames)

    def receive(self, into, on_bad: Callable[[ProtocolError], None]) -> bool:
        """Append each message received so far to ``into``; True if there was any. A bad message is
        dropped and given to ``on_bad``. Over ZeroMQ the engine's absence shows only as silence."""
        sock = self.sock
        unpack = worker_protocol.unpack
        received = False
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return received
            received = True
            for frame in frames:
                try:
                    into.append(unpack(frame))
                except ProtocolError as e:
                    on_bad(e)

    def close(self) -> None:
        self.sock.close()


class StreamLink:
    def __init__(self, fd: int) -> None:
        # Blocking sends (the engine always reads), reads that never wait (MSG_DONTWAIT).
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.pollable = fd
        self.decoder = worker_protocol.StreamDecoder()

    def send(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except OSError:
            pass  # the engine closed its end: the next receive says so, and the worker ends

    def send_all(self, frames: list[bytes]) -> None:
        self.send(frames[0] if len(frames) == 1 else b"".join(frames))

    def receive(self, into, on_bad: Callable[[ProtocolError], None]) -> bool:
        """As ZeroMQLink.receive; raises EOFError once the engine closed its end (it retired this
        worker, or the daemon is gone) or sent bytes that are not the protocol."""
        recv = self.sock.recv
        validate = worker_protocol.validate
        received = False
        while True:
            try:
                data = recv(READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return received
            except OSError as e:
                raise EOFError(f"the engine's link failed: {e}") from None
            if not data:
                raise EOFError("the engine closed the link")
            received = True
            try:
                messages = self.decoder.feed(data)
            except ProtocolError as e:
                raise EOFError(str(e)) from None
            for message in messages:
                try:
                    into.append(validate(message))
                except ProtocolError as e:
                    on_bad(e)
            if len(data) < READ_SIZE:
                return received

    def close(self) -> None:
        self.sock.close()
