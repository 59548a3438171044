"""A Python client for a ``zeromq-server`` task with ``"replies": "stream"`` (docs/drivers.md,
"Streamed replies").

One :class:`StreamClient` is one DEALER connection on which any number of requests interleave::

    client = StreamClient("tcp://127.0.0.1:9100")
    client.call(b"hello")                      # the whole response, as bytes
    for chunk in client.request(b"1 GiB"):     # the chunks at this loop's pace: each one taken
        ...                                    # is credited, so the handler stays a window ahead

A client is not thread-safe: use one per thread. Waiting for one request's next message also takes
in whatever arrives for the others. Every wait gives up after ``timeout`` seconds with
:class:`TimeoutError`; a request that fails raises :class:`cocaine.core.errors.JobError`; a message
that is not of the protocol raises :class:`ValueError`.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

import zmq

from cocaine.core.errors import JobError
from cocaine.drivers.zeromq_stream import CANCEL, CHUNK, CREDIT, ERROR, OK, REQUEST


class StreamClient:
    def __init__(self, endpoint: str, *, context: zmq.Context | None = None, timeout: float = 30.0,
                 curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        """``curve``: (client public key, client secret key, server public key), for a daemon with
        CURVE (docs/security.md)."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.linger = 0
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self.calls: dict[bytes, StreamedCall] = {}

    def request(self, body: bytes = b"") -> StreamedCall:
        """Send a request and return its :class:`StreamedCall` at once; iterate it for the chunks."""
        call = StreamedCall(self, b"%d" % next(self._ids))
        self.send(call.id, REQUEST, body)
        self.calls[call.id] = call
        return call

    def call(self, body: bytes = b"") -> bytes:
        """Send a request and return the whole response (its chunks joined)."""
        return b"".join(self.request(body))

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------
    def send(self, request_id: bytes, verb: bytes, *frames: bytes) -> None:
        self.sock.send_multipart([request_id, b"", verb, *frames])

    def pump(self, deadline: float) -> None:
        """Wait for one message (until ``deadline``, a monotonic time) and apply it to its request."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.sock.poll(remaining * 1000):
            raise TimeoutError(f"no answer from {self.endpoint} within {self.timeout:g} s")
        frames = self.sock.recv_multipart()
        if len(frames) < 3 or frames[1] != b"":
            raise ValueError(f"not a streamed reply: {frames[:3]!r}")
        call = self.calls.get(frames[0])
        if call is None:
            return  # a request that has ended
        verb, rest = frames[2], frames[3:]
        if verb == CHUNK and len(rest) == 1:
            call.chunks.append(rest[0])
        elif verb == OK:
            call.finish(None)
        elif verb == ERROR and len(rest) == 2 and rest[0].isdigit():
            call.finish(JobError(int(rest[0]), rest[1].decode(errors="replace")))
        else:
            raise ValueError(f"not a streamed reply: {frames[:4]!r}")


class StreamedCall:
    """One request: its response chunks as they arrive, each credited to the server once taken."""

    def __init__(self, client: StreamClient, request_id: bytes) -> None:
        self.client = client
        self.id = request_id
        self.chunks: deque[bytes] = deque()
        self.finished = False
        self.error: JobError | None = None

    def __iter__(self):
        """The response chunks; raises JobError if the request fails."""
        client = self.client
        deadline = time.monotonic() + client.timeout
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                if chunk and not self.finished:
                    client.send(self.id, CREDIT, b"%d" % len(chunk))
                yield chunk
                deadline = time.monotonic() + client.timeout
            elif self.finished:
                if self.error is not None:
                    raise self.error
                return
            else:
                client.pump(deadline)

    def cancel(self) -> None:
        """Give up: the server stops the job; its one answer (error 503) is not waited for."""
        if not self.finished:
            self.client.send(self.id, CANCEL)
            self.finish(JobError(503, "cancelled by the client"))

    def finish(self, error: JobError | None) -> None:
        self.finished = True
        self.error = error
        self.client.calls.pop(self.id, None)
