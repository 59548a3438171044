"""``zeromq-server`` with ``"replies": "stream"``: each response leaves chunk by chunk, paced by its
client's credit (docs/drivers.md, "Streamed replies").

A DEALER client sends ``[id..., b"", verb, ...]``; the ROUTER sees the envelope (its identity, the
client's id frames and the delimiter) and answers every message of that request on the same
envelope, so many requests interleave on one connection. Verbs: ``request`` (the body frames
follow), ``credit`` (the client consumed this many more response bytes) and ``cancel``. Replies:
``chunk`` (one per response chunk, as produced), then exactly one ``ok`` or ``error``. The job is
opened ``paced``: credit goes back to the worker as ``drained``, so the handler never runs more
than the response window ahead of the client, and the ROUTER never queues more than that for it.
"""

from __future__ import annotations

import time

import zmq

from cocaine.core.plugin_api import Code, ProtocolError
from cocaine.core.transport import NOBLOCK, recv_frames, send_frames, split_envelope

REQUEST, CREDIT, CANCEL = b"request", b"credit", b"cancel"
CHUNK, OK, ERROR = b"chunk", b"ok", b"error"
VERBS = "request, credit or cancel"
#: Digits a credit's byte count may have (far beyond any response, and parsed without surprises).
MAX_CREDIT_DIGITS = 15


class StreamedReplies:
    """The ROUTER socket of a ``zeromq-server`` task in stream mode and its requests in progress,
    keyed by envelope."""

    def __init__(self, driver) -> None:
        self.context = context = driver.context
        self.idle_timeout = driver.config["idle-timeout"]
        self.calls: dict[tuple[bytes, ...], StreamedReply] = {}
        self.counters = dict.fromkeys(("requests", "chunks-out", "bytes-out", "cancelled", "timed-out",
                                       "unreachable", "protocol-errors"), 0)
        sock = self.sock = context.zmq_context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.router_mandatory = True  # a reply to a vanished client fails instead of vanishing
        sock.sndhwm = 10_000  # messages per client; credit bounds the bytes
        try:
            context.secure(sock)  # the daemon's message size limit and CURVE (docs/security.md)
            sock.bind(driver.config["endpoint"])
        except BaseException:
            sock.close(0)
            raise

    def info(self) -> dict:
        return {**self.counters, "open": len(self.calls)}

    def stop(self) -> None:
        # Every job was answered before the drivers stop; a timer left would outlive the socket.
        for call in list(self.calls.values()):
            call.stop_timer()

    # -- receiving ----------------------------------------------------------------------------------
    def on_readable(self) -> None:
        sock = self.sock
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            envelope, body = split_envelope(frames)
            try:
                self._apply(envelope, body)
            except ProtocolError as e:
                self.counters["protocol-errors"] += 1
                self._refuse(envelope, str(e))

    def _apply(self, envelope: list[bytes], body: list[bytes]) -> None:
        if not body:
            raise ProtocolError(f"no verb frame after the envelope (expected {VERBS})")
        verb, rest = body[0], body[1:]
        call = self.calls.get(tuple(envelope))
        if verb == REQUEST:
            if call is not None:
                raise ProtocolError("request: the envelope is in use by a request in progress")
            self._open(envelope, rest)
        elif verb == CREDIT:
            nbytes = parse_credit(rest)
            if call is not None:  # else the response has ended: late credit is ignored
                call.read(nbytes)
        elif verb == CANCEL:
            if rest:
                raise ProtocolError(f"cancel: expected no frame after the verb, got {len(rest)}")
            if call is not None:
                self.counters["cancelled"] += 1
                call.handle.cancel(Code.UNAVAILABLE, "cancelled by the client")
        else:
            raise ProtocolError(f"verb frame: unknown verb {shown(verb)} (expected {VERBS})")

    def _open(self, envelope: list[bytes], data: list[bytes]) -> None:
        self.counters["requests"] += 1
        call = self.calls[tuple(envelope)] = StreamedReply(self, envelope)
        body = data[0] if len(data) == 1 else b"".join(data)
        call.handle = self.context.open_job(call, body=body, paced=True)

    def _refuse(self, envelope: list[bytes], reason: str) -> None:
        """A malformed message fails the request on its envelope, if one is in progress; otherwise
        it is answered with the error alone."""
        call = self.calls.get(tuple(envelope))
        if call is not None:
            call.handle.cancel(Code.BAD_REQUEST, reason)
        else:
            self.send([*envelope, ERROR, b"%d" % Code.BAD_REQUEST, reason.encode()])

    # -- sending ------------------------------------------------------------------------------------
    def send(self, frames: list[bytes]) -> bool:
        try:
            send_frames(self.sock, frames, NOBLOCK)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH: the client is gone; EAGAIN: 10,000 replies unread
            return False


def parse_credit(frames: list[bytes]) -> int:
    """The byte count of a ``credit`` message (the frames after its verb)."""
    if len(frames) != 1:
        raise ProtocolError(f"credit: expected one byte-count frame after the verb, got {len(frames)} frames")
    count = frames[0]
    if not count.isdigit() or len(count) > MAX_CREDIT_DIGITS:
        raise ProtocolError(f"credit: the byte-count frame must be 1 to {MAX_CREDIT_DIGITS} ASCII digits, "
                            f"got {shown(count)}")
    return int(count)


def shown(frame: bytes) -> str:
    """A frame as an error message quotes it: its first 32 bytes, non-ASCII escaped."""
    text = frame[:32].decode("ascii", "backslashreplace")
    return f"'{text}...'" if len(frame) > 32 else f"'{text}'"


class StreamedReply:
    """One request: the job's responder, sending each chunk at once, and the response's credit."""

    __slots__ = ("replies", "envelope", "handle", "done", "silent", "unread", "waiting_since", "timer")

    def __init__(self, replies: StreamedReplies, envelope: list[bytes]) -> None:
        self.replies = replies
        self.envelope = envelope
        self.handle = None
        self.done = False
        self.silent = False  # the client is gone: send it nothing more
        self.unread = 0  # response bytes sent and not credited yet
        self.waiting_since = 0.0  # when the client last credited, or the wait for credit began
        self.timer = None

    def read(self, nbytes: int) -> None:
        """The client's credit: it consumed ``nbytes`` more bytes of the response."""
        if nbytes > self.unread:
            raise ProtocolError(f"credit: {nbytes} bytes is more than the {self.unread} bytes sent and not credited")
        self.unread -= nbytes
        self.waiting_since = time.monotonic()
        self.handle.drained(nbytes)

    # -- the responder ---------------------------------------------------------------------------------
    def chunk(self, data: bytes) -> None:
        counters = self.replies.counters
        counters["chunks-out"] += 1
        counters["bytes-out"] += len(data)
        if not self.unread and data:  # the wait for the client's credit starts now
            self.waiting_since = time.monotonic()
            if self.timer is None:
                self.timer = self.replies.context.reactor.call_at(
                    self.waiting_since + self.replies.idle_timeout, self._check_idle)
        self.unread += len(data)
        self._send([*self.envelope, CHUNK, data])

    def end(self) -> None:
        self._finish()
        self._send([*self.envelope, OK])

    def error(self, code: int, message: str) -> None:
        self._finish()
        if code == Code.TIMEOUT:
            self.replies.counters["timed-out"] += 1
        self._send([*self.envelope, ERROR, b"%d" % code, message.encode()])

    # -- internals -------------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        """Fail the request if its client credited nothing for ``idle-timeout`` seconds while
        response bytes it had not credited were out (a client gone is noticed only by sending to
        it, and a paced response waits instead)."""
        self.timer = None
        if self.done or not self.unread:
            return
        idle = self.replies.idle_timeout
        due = self.waiting_since + idle
        if time.monotonic() >= due:
            self.handle.cancel(Code.TIMEOUT, f"no response credit for {idle:g} s")
        else:
            self.timer = self.replies.context.reactor.call_at(due, self._check_idle)

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _finish(self) -> None:
        self.done = True
        self.stop_timer()
        calls = self.replies.calls
        key = tuple(self.envelope)
        if calls.get(key) is self:
            del calls[key]

    def _send(self, frames: list[bytes]) -> None:
        if self.silent:
            return
        if not self.replies.send(frames):
            # The client is gone or does not read: stop the job rather than queue for it.
            self.silent = True
            self.replies.counters["unreachable"] += 1
            if not self.done:
                self.handle.cancel(Code.UNAVAILABLE, "the client is gone or does not read its replies")
