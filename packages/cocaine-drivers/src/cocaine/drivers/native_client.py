"""A Python client for ``native-server`` (docs/native-protocol.md).

One :class:`Client` is one DEALER connection on which any number of requests interleave::

    client = Client("tcp://127.0.0.1:9300")
    client.call(b"hello")                          # the whole response, as bytes

    upload = client.request(stream=True)            # a streamed request
    for piece in pieces:
        upload.write(piece)                         # waits for credit when the server is behind
    upload.end()
    for chunk in upload:                            # response chunks as they arrive
        ...

A client is not thread-safe: use one per thread. Waiting for one request (its next chunk, or credit
to write) also takes in whatever arrives for the others, so their order does not matter. Every wait
gives up after ``timeout`` seconds with :class:`TimeoutError`; a request that fails raises
:class:`cocaine.core.errors.JobError` with the server's code and message.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

import zmq

from cocaine.core.errors import JobError
from cocaine.drivers import native_protocol
from cocaine.drivers.native_protocol import WINDOW, pack


class Client:
    def __init__(self, endpoint: str, *, context: zmq.Context | None = None, timeout: float = 30.0,
                 curve: tuple[bytes, bytes, bytes] | None = None, immediate: bool = False) -> None:
        """``curve``: (client public key, client secret key, server public key), for a daemon with
        CURVE (docs/security.md). ``immediate``: send only over a live connection, raising
        ConnectionError when there is none (see :meth:`connected`), instead of queueing the messages
        until the server is back."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.immediate = immediate
        self._send_flags = zmq.NOBLOCK if immediate else 0
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self._calls: dict[object, Call] = {}

    def request(self, body: bytes = b"", *, stream: bool = False, urgent: bool = False,
                timeout: float | None = None, deadline: float | None = None, paced: bool = False) -> Call:
        """Send a request and return its :class:`Call` at once.

        :param body: the whole body, or with ``stream`` the first chunk (empty: none).
        :param stream: more chunks follow with ``write()``, and ``end()`` completes the request.
        :param urgent: the server runs it before the requests already waiting.
        :param timeout: seconds the server gives the request before failing it with 504.
        :param deadline: a Unix time after which the server fails the request with 504.
        :param paced: the response comes at the pace this client reads it: iterating the call
            credits the server with each chunk taken, and the handler is held to the server's
            response window ahead of that (a huge response then never piles up anywhere).
        """
        options = {}
        if paced:
            options["paced"] = True
        if urgent:
            options["urgent"] = True
        if timeout is not None:
            options["timeout"] = timeout
        if deadline is not None:
            options["deadline"] = deadline
        call = Call(self, next(self._ids), stream)
        call.paced = paced
        if not stream:
            self._send([pack([native_protocol.REQUEST, call.id, options]), body])
        elif len(body) <= WINDOW:
            self._send([pack([native_protocol.OPEN, call.id, options]), *([body] if body else [])])
            call.credit -= len(body)
        else:
            self._send([pack([native_protocol.OPEN, call.id, options])])
        self._calls[call.id] = call  # once sent: a request that could not be sent is not waited for
        if stream and len(body) > WINDOW:
            call.write(body)
        return call

    def call(self, body: bytes = b"", **options) -> bytes:
        """Send a whole request and return the whole response (its chunks joined)."""
        return self.request(body, **options).read()

    def connected(self, timeout: float = 0.0) -> bool:
        """Whether a message can leave now, waiting up to ``timeout`` seconds for the connection
        (with ``immediate``: whether the server is connected)."""
        return bool(self.sock.poll(timeout * 1000, zmq.POLLOUT))

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------
    def _send(self, frames: list[bytes]) -> None:
        try:
            self.sock.send_multipart(frames, self._send_flags)
        except zmq.Again:  # only with immediate
            raise ConnectionError(f"not connected to {self.endpoint}") from None

    def wait(self, deadline: float) -> None:
        """Wait for one message (until ``deadline``, a monotonic time) and apply it to its call; for
        callers that keep their own deadlines (the cluster client). :raises TimeoutError: at the deadline."""
        self._pump(deadline)

    def _pump(self, deadline: float) -> None:
        """Wait for one message (until ``deadline``, a monotonic time) and apply it to its call."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.sock.poll(remaining * 1000):
            raise TimeoutError(f"no answer from the server within {self.timeout:g} s")
        header, *data = self.sock.recv_multipart()
        message = native_protocol.unpack_header(header)
        call = self._calls.get(message[1])
        if call is None:
            return  # a call we cancelled or gave up on
        kind = message[0]
        if kind == native_protocol.CHUNK:
            call.started = True
            call.chunks.extend(data)
        elif kind == native_protocol.CREDIT:
            call.started = True
            call.credit += message[2]
        elif kind == native_protocol.END:
            call._finish(None)
        elif kind == native_protocol.ERROR:
            call._finish(JobError(message[2], message[3]))


class Call:
    """One request: write its chunks (streamed requests), then read its response chunks."""

    def __init__(self, client: Client, request_id: int, stream: bool) -> None:
        self.client = client
        self.id = request_id
        self.streaming = stream  # request chunks may still be written
        self.credit = WINDOW
        self.chunks: deque[bytes] = deque()
        self.finished = False
        self.error: JobError | None = None
        # A response chunk or credit came: a handler has the request, so it may have had effects.
        self.started = False
        self.paced = False  # credit the server with each response chunk taken

    def write(self, data: bytes) -> None:
        """Send a request chunk, split to fit the credit; waits for credit when there is none left."""
        if self.finished:  # the server answered before reading it all: the rest is not needed
            self._raise()
            return
        if not self.streaming:
            raise RuntimeError("write() after end(), or on a request that does not stream")
        view = memoryview(data)
        deadline = time.monotonic() + self.client.timeout
        while view:
            while self.credit <= 0:
                self.client._pump(deadline)
                if self.finished:
                    self._raise()
                    return
            piece, view = view[:self.credit], view[self.credit:]
            self.client._send([pack([native_protocol.CHUNK, self.id]), piece])
            self.credit -= len(piece)

    def end(self) -> None:
        """The request is complete."""
        if self.streaming:
            self.streaming = False
            self.client._send([pack([native_protocol.END, self.id])])

    def cancel(self) -> None:
        """Give up: the server stops the job and sends nothing more for it."""
        if not self.finished:
            try:
                self.client._send([pack([native_protocol.CANCEL, self.id])])
            except ConnectionError:  # immediate, and the server is gone: nothing left to stop there
                pass
            self._finish(JobError(503, "cancelled by the client"))

    def __iter__(self):
        """The response chunks as they arrive; raises JobError if the request fails."""
        deadline = time.monotonic() + self.client.timeout
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                if self.paced and not self.finished:
                    self.client._send([pack([native_protocol.CREDIT, self.id, len(chunk)])])
                yield chunk
                deadline = time.monotonic() + self.client.timeout
            elif self.finished:
                self._raise()
                return
            else:
                self.client._pump(deadline)

    def read(self) -> bytes:
        """The whole response."""
        return b"".join(self)

    def _finish(self, error: JobError | None) -> None:
        self.finished = True
        self.streaming = False
        self.error = error
        self.client._calls.pop(self.id, None)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
