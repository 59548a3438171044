"""``zeromq-server``: request/response over a ZeroMQ ROUTER socket, usable from a plain REQ socket.

Framing (docs/drivers.md): a request is one ZeroMQ message whose frames after the envelope are the
body (several frames are concatenated). The reply is one message: ``[b"ok", *chunks]`` with the
response chunks in order, or ``[b"error", b"<code>", b"<message>"]``. A task with
``"replies": "stream"`` answers chunk by chunk under its client's credit instead
(:mod:`cocaine.drivers.zeromq_stream`).
"""

from __future__ import annotations

import zmq

from cocaine.core.plugin_api import check_endpoint, ConfigError, get_number, get_str, only_keys
from cocaine.core.transport import NOBLOCK, recv_frames, send_frames, split_envelope
from cocaine.drivers.common import SocketDriver
from cocaine.drivers.zeromq_stream import StreamedReplies

OK = b"ok"
ERROR = b"error"
#: The task key ``replies``: one message per request (any REQ client), or streamed under credit.
WHOLE, STREAM = "whole", "stream"


class ZeroMQServer(SocketDriver):
    name = "zeromq-server"

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "endpoint", "replies", "idle-timeout"), where)
        normal = {"type": cls.name, "endpoint": check_endpoint(config.get("endpoint"), f"{where}.endpoint")}
        if get_str(config, "replies", where, default=WHOLE, choices=(WHOLE, STREAM)) == STREAM:
            normal["replies"] = STREAM
            normal["idle-timeout"] = get_number(config, "idle-timeout", where, default=60)
        elif "idle-timeout" in config:
            raise ConfigError(f'{where}.idle-timeout: applies only with "replies": "stream"')
        # A task with whole replies keeps the config (and so the info) it always had.
        return normal

    streams: StreamedReplies | None = None

    def start(self) -> None:
        if self.config.get("replies") == STREAM:
            streams = self.streams = StreamedReplies(self)
            self.sock = streams.sock
            self.context.reactor.add_reader(streams.sock, streams.on_readable)
            return
        sock = self.sock = self.context.server_socket(zmq.ROUTER, self.config["endpoint"])
        self.outbox: list[list[bytes]] = []
        self.context.reactor.add_reader(sock, self._on_readable)
        self.context.reactor.add_flusher(self._flush)

    def stop(self) -> None:
        if self.streams is not None:
            self.streams.stop()
        elif self.sock is not None:
            self._flush()  # the answers given while stopping
            self.context.reactor.remove_flusher(self._flush)
        super().stop()

    def info(self):
        info = super().info()
        if self.streams is not None:
            info["counters"] = self.streams.info()
        return info

    def _flush(self) -> None:
        """Send the round's replies back to back: ZeroMQ's I/O thread, woken by the first, then
        writes many in one system call rather than one each."""
        outbox, sock = self.outbox, self.sock
        if not outbox:
            return
        self.outbox = []
        if sock is None:
            return
        for frames in outbox:
            try:
                send_frames(sock, frames, NOBLOCK)
            except zmq.ZMQError:
                pass  # the client is gone or not reading; ROUTER drops what it cannot deliver

    def _on_readable(self) -> None:
        sock = self.sock
        submit = self.context.submit
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            if len(frames) == 3 and not frames[1]:  # a REQ client's: identity, delimiter, body
                submit(frames[2], Reply(self, frames[:2]))
                continue
            envelope, body = split_envelope(frames)
            submit(body[0] if len(body) == 1 else b"".join(body), Reply(self, envelope))


class Reply:
    """Collects the response chunks; queues them as one reply message when the job ends (it leaves
    with the round's other replies)."""

    __slots__ = ("driver", "envelope", "chunks")

    def __init__(self, driver: ZeroMQServer, envelope: list[bytes]) -> None:
        self.driver = driver
        self.envelope = envelope
        self.chunks: list[bytes] = []

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def end(self) -> None:
        self.driver.outbox.append([*self.envelope, OK, *self.chunks])

    def error(self, code: int, message: str) -> None:
        self.driver.outbox.append([*self.envelope, ERROR, str(code).encode(), message.encode()])
