"""``zeromq-server``: request/response over a ZeroMQ ROUTER socket, usable from a plain REQ socket.

Framing (docs/drivers.md): a request is one ZeroMQ message whose frames after the envelope are the
body (several frames are concatenated). The reply is one message: ``[b"ok", *chunks]`` with the
response chunks in order, or ``[b"error", b"<code>", b"<message>"]``.
"""

from __future__ import annotations

import zmq

from cocaine.core.plugin_api import check_endpoint, only_keys
from cocaine.core.transport import NOBLOCK, recv_frames, send_frames, split_envelope
from cocaine.drivers.common import SocketDriver

OK = b"ok"
ERROR = b"error"


class ZeroMQServer(SocketDriver):
    name = "zeromq-server"

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "endpoint"), where)
        return {"type": cls.name, "endpoint": check_endpoint(config.get("endpoint"), f"{where}.endpoint")}

    def start(self) -> None:
        sock = self.sock = self.context.server_socket(zmq.ROUTER, self.config["endpoint"])
        self.context.reactor.add_reader(sock, self._on_readable)

    def _on_readable(self) -> None:
        sock = self.sock
        submit = self.context.submit
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            envelope, body = split_envelope(frames)
            submit(body[0] if len(body) == 1 else b"".join(body), Reply(sock, envelope))


class Reply:
    """Collects the response chunks; sends them as one reply message when the job ends."""

    __slots__ = ("sock", "envelope", "chunks")

    def __init__(self, sock: zmq.Socket, envelope: list[bytes]) -> None:
        self.sock = sock
        self.envelope = envelope
        self.chunks: list[bytes] = []

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def end(self) -> None:
        self._send([*self.envelope, OK, *self.chunks])

    def error(self, code: int, message: str) -> None:
        self._send([*self.envelope, ERROR, str(code).encode(), message.encode()])

    def _send(self, frames: list[bytes]) -> None:
        try:
            send_frames(self.sock, frames, NOBLOCK)
        except zmq.ZMQError:
            pass  # the client is gone or not reading; ROUTER drops what it cannot deliver
