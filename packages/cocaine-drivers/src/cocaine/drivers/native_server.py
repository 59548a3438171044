"""``native-server``: the streaming request/response protocol (docs/native-protocol.md).

A ROUTER socket; each client (a DEALER) interleaves many requests, each keyed by the id it chose.
Requests may stream in chunks under credit-based flow control, responses stream back chunk by
chunk (under the client's own credit when it asks for ``paced``), and each request may be
``urgent`` (head of the queue) and carry a ``timeout`` or ``deadline`` after which it fails with 504.
"""

from __future__ import annotations

import time

import zmq

from cocaine.core.plugin_api import check_endpoint, Code, get_number, only_keys, ProtocolError
from cocaine.core.transport import NOBLOCK, recv_frames, send_frames
from cocaine.drivers import native_protocol
from cocaine.drivers.common import SocketDriver
from cocaine.drivers.native_protocol import WINDOW, pack


class NativeServer(SocketDriver):
    name = "native-server"

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "endpoint", "idle-timeout"), where)
        return {"type": cls.name,
                "endpoint": check_endpoint(config.get("endpoint"), f"{where}.endpoint"),
                "idle-timeout": get_number(config, "idle-timeout", where, default=60)}

    def start(self) -> None:
        self.calls: dict[tuple[bytes, object], Call] = {}
        self.counters = dict.fromkeys(("requests", "streamed", "chunks-in", "bytes-in", "chunks-out", "bytes-out",
                                       "cancelled", "timed-out", "unreachable", "protocol-errors"), 0)
        sock = self.sock = self.context.zmq_context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.router_mandatory = True  # a reply to a vanished or stuck client fails instead of vanishing
        sock.sndhwm = 10_000
        self.context.secure(sock)  # the daemon's message size limit and CURVE (docs/security.md)
        sock.bind(self.config["endpoint"])
        self.context.reactor.add_reader(sock, self._on_readable)

    def info(self):
        return {**super().info(), "counters": {**self.counters, "open": len(self.calls)}}

    # -- receiving ----------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        sock = self.sock
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            if len(frames) < 2:
                self.counters["protocol-errors"] += 1
                continue
            identity = frames[0]
            try:
                header = native_protocol.unpack_header(frames[1])
                self._apply(identity, header, frames[2:])
            except (ProtocolError, IndexError, TypeError, ValueError) as e:
                self.counters["protocol-errors"] += 1
                self._refuse(identity, frames[1], str(e))

    def _refuse(self, identity: bytes, header: bytes, reason: str) -> None:
        """Answer a protocol error with error 400 on its request id (failing that request if it is
        open); without a usable id, the message is only counted."""
        try:
            request_id = native_protocol.unpack_header(header)[1]
        except ProtocolError:
            return
        call = self.calls.get((identity, request_id))
        if call is not None:
            call.handle.cancel(Code.BAD_REQUEST, reason)
        else:
            self.send(identity, [pack([native_protocol.ERROR, request_id, int(Code.BAD_REQUEST), reason])])

    def _apply(self, identity: bytes, header: list, data: list[bytes]) -> None:
        kind, request_id = header[0], header[1]
        if kind in (native_protocol.REQUEST, native_protocol.OPEN):
            self._open(identity, request_id, header[2] if len(header) > 2 else {}, data, kind == native_protocol.OPEN)
            return
        call = self.calls.get((identity, request_id))
        if kind in (native_protocol.CHUNK, native_protocol.END):
            if call is not None:  # else the request has ended already: its late chunks are dropped
                call.received(data, kind == native_protocol.END)
        elif kind == native_protocol.CREDIT:
            if call is not None:  # else the response is out already
                call.read(header)
        elif kind == native_protocol.CANCEL:
            if call is not None:
                self.counters["cancelled"] += 1
                call.silent = True
                call.handle.cancel(Code.UNAVAILABLE, "cancelled by the client")
        else:
            raise ProtocolError(f"unknown message type {kind}")

    def _open(self, identity: bytes, request_id, options, data: list[bytes], stream: bool) -> None:
        key = (identity, request_id)
        if key in self.calls:
            raise ProtocolError(f"request id {request_id!r} is already in use")
        urgent, timeout, paced = _options(options)
        counters = self.counters
        counters["requests"] += 1
        counters["streamed"] += stream
        if timeout is not None and timeout <= 0:
            counters["timed-out"] += 1
            self.send(identity, [pack([native_protocol.ERROR, request_id, int(Code.TIMEOUT),
                                       "deadline exceeded before the request arrived"])])
            return
        body = data[0] if len(data) == 1 else b"".join(data)
        counters["chunks-in"] += len(data)
        counters["bytes-in"] += len(body)
        if stream and len(body) > WINDOW:
            raise ProtocolError(beyond_credit(len(body) - WINDOW))
        call = self.calls[key] = Call(self, identity, request_id, stream)
        call.got = len(body)
        call.paced = paced
        call.handle = self.context.open_job(call, {"id": request_id}, body=body, stream=stream, timeout=timeout,
                                            urgent=urgent, on_credit=call.credit if stream else None, paced=paced)
        if (stream or paced) and not call.done:
            call.watch_idle()

    # -- sending ------------------------------------------------------------------------------------
    def send(self, identity: bytes, frames: list[bytes]) -> bool:
        sock = self.sock
        if sock is None:
            return False
        try:
            send_frames(sock, [identity, *frames], NOBLOCK)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH: the client is gone; EAGAIN: it reads too slowly
            return False


def beyond_credit(excess: int) -> str:
    """The error of a streamed request whose chunks (those of its open message too) passed its credit."""
    return f"flow control: {excess} bytes sent beyond credit"


def _options(options) -> tuple[bool, float | None, bool]:
    """``urgent``, the seconds the request has left (from ``timeout`` and ``deadline``) and ``paced``,
    from its options."""
    if not isinstance(options, dict):
        raise ProtocolError("options must be a map")
    urgent = options.get("urgent", False)
    if not isinstance(urgent, bool):
        raise ProtocolError("option urgent must be true or false")
    paced = options.get("paced", False)
    if not isinstance(paced, bool):
        raise ProtocolError("option paced must be true or false")
    left = None
    timeout = options.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ProtocolError("option timeout must be a number of seconds > 0")
        left = float(timeout)
    deadline = options.get("deadline")
    if deadline is not None:
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or deadline != deadline:
            raise ProtocolError("option deadline must be a Unix time (a number)")
        left = min(left if left is not None else float("inf"), deadline - time.time())
    return urgent, left, paced


class Call:
    """One request of one client: the job's responder, and the request's flow control and timers."""

    __slots__ = ("server", "identity", "id", "head_chunk", "streaming", "granted", "got", "last_chunk_at",
                 "handle", "done", "silent", "timer", "paced", "unread")

    def __init__(self, server: NativeServer, identity: bytes, request_id, stream: bool) -> None:
        self.server = server
        self.identity = identity
        self.id = request_id
        self.head_chunk = pack([native_protocol.CHUNK, request_id])
        self.streaming = stream  # request chunks may still come
        self.granted = WINDOW
        self.got = 0
        self.last_chunk_at = time.monotonic()  # the client's last request chunk, or response credit
        self.handle = None
        self.done = False
        self.silent = False  # the client cancelled: send it nothing more
        self.timer = None  # the idle timeout's
        self.paced = False  # the client credits the response as it reads it
        self.unread = 0  # bytes of a paced response sent and not credited by the client yet

    def watch_idle(self) -> None:
        """Fail the request if the client goes silent for ``idle-timeout`` seconds while the server
        waits for it: for its next request chunk, or for credit for the response sent so far (a
        client gone is noticed only by sending to it, and a paced response waits instead)."""
        if self.done:
            return
        waiting = self.streaming or self.unread > 0
        if not waiting and not self.paced:
            return
        idle = self.server.config["idle-timeout"]
        now = time.monotonic()
        due = self.last_chunk_at + idle if waiting else now + idle
        if now >= due:
            what = "request chunk" if self.streaming else "response credit"
            self.handle.cancel(Code.TIMEOUT, f"no {what} for {idle:g} s")
        else:
            self.timer = self.server.context.reactor.call_at(due, self.watch_idle)

    # -- the request ----------------------------------------------------------------------------------
    def received(self, data: list[bytes], end: bool) -> None:
        if not self.streaming:
            raise ProtocolError(f"request {self.id!r} is not streaming (no open, or ended)")
        size = sum(map(len, data))
        counters = self.server.counters
        counters["chunks-in"] += len(data)
        counters["bytes-in"] += size
        self.got += size
        if self.got > self.granted:
            self.handle.cancel(Code.BAD_REQUEST, beyond_credit(self.got - self.granted))
            return
        self.last_chunk_at = time.monotonic()
        push = self.handle.push
        for chunk in data:
            push(chunk)
        if end:
            self.streaming = False
            self.handle.close()

    def credit(self, nbytes: int) -> None:
        if self.streaming:
            self.granted += nbytes
            self._send([pack([native_protocol.CREDIT, self.id, nbytes])])

    def read(self, header: list) -> None:
        """The client's credit: it read this many more bytes of the response."""
        if not self.paced:
            raise ProtocolError(f"request {self.id!r} is not paced (no option paced)")
        nbytes = header[2] if len(header) > 2 else None
        if type(nbytes) is not int or nbytes < 0:
            raise ProtocolError("credit must be a number of bytes (an integer >= 0)")
        self.unread = max(0, self.unread - nbytes)
        self.last_chunk_at = time.monotonic()
        self.handle.drained(nbytes)

    # -- the responder ---------------------------------------------------------------------------------
    def chunk(self, data: bytes) -> None:
        counters = self.server.counters
        counters["chunks-out"] += 1
        counters["bytes-out"] += len(data)
        if self.paced:
            if not self.unread:  # the wait for the client's credit starts now
                self.last_chunk_at = time.monotonic()
            self.unread += len(data)
        self._send([self.head_chunk, data])

    def end(self) -> None:
        self._finish()
        self._send([pack([native_protocol.END, self.id])])

    def error(self, code: int, message: str) -> None:
        self._finish()
        if code == Code.TIMEOUT:
            self.server.counters["timed-out"] += 1
        self._send([pack([native_protocol.ERROR, self.id, int(code), message])])

    def _finish(self) -> None:
        self.done = True
        self.streaming = False
        if self.timer is not None:
            self.timer.cancel()
        server = self.server
        if server.calls.get((self.identity, self.id)) is self:
            del server.calls[(self.identity, self.id)]

    def _send(self, frames: list[bytes]) -> None:
        if self.silent:
            return
        if not self.server.send(self.identity, frames):
            # The client is gone or does not read: stop the job rather than queue for it.
            self.silent = True
            self.server.counters["unreachable"] += 1
            if not self.done:
                self.handle.cancel(Code.UNAVAILABLE, "the client is gone or does not read its replies")
