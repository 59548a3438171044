"""One HTTP connection: httptools (llhttp) parses the requests, each becomes a job, and the
responses go back in request order (pipelining).

A request whose body is small and has a Content-Length is sent to its worker whole once it is
complete. A chunked body, or one above ``stream-threshold``, opens a streamed job as soon as the
head is parsed, and its body follows under the engine's credit flow control: the connection stops
reading while the handler is :data:`REQUEST_WINDOW` bytes behind, so an upload of any size holds
bounded memory.

Output is batched per reactor round (the server's flusher calls :meth:`Connection.flush`): a
response whose end arrives in the same round as its chunks leaves with a ``Content-Length``;
otherwise it streams as chunked transfer encoding, each round's chunks as they were produced.
Responses are paced: the bytes of a response are granted back to its worker as the socket takes
them (``marks`` says whose bytes ``out`` holds), so a handler streams at its client's pace and the
connection holds at most a response window per request.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from select import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT

import httptools

from cocaine.core.plugin_api import REQUEST_WINDOW, Code
from cocaine.drivers.http.response import ERRORS, BadMeta, error_response, head, parse_meta
from cocaine.drivers.tcp import reset_on_close

log = logging.getLogger(__name__)

READ_SIZE = 65536
MAX_PIPELINE = 16  # requests parsed ahead of their responses before the connection stops reading
LINGER = 2.0  # seconds to drain a client's input after a closing response, so that it gets the response
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# What the connection waits for, for the server's timeout sweep.
IDLE, HEAD, BODY, BUSY = range(4)  # the next request; a request's head; its body; nothing (responses)

LENGTH, CHUNKED, UNTIL_CLOSE = range(3)  # how a response body is framed


class Refused(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Abort(Exception):
    """The response cannot be completed (its head is out already): reset the connection."""


class Exchange:
    """One request and its response; the job's responder."""

    __slots__ = ("conn", "handle", "is_head", "keep_alive", "http10", "status", "headers", "chunks", "ended",
                 "failed", "started", "mode", "no_body", "request_done", "continue_wanted", "rendered")

    def __init__(self, conn: Connection, is_head: bool, keep_alive: bool, http10: bool) -> None:
        self.conn = conn
        self.handle = None
        self.is_head = is_head  # a HEAD request: no body goes back
        self.keep_alive = keep_alive
        self.http10 = http10
        self.status = 200
        self.headers = b""
        self.chunks: list[bytes] = []  # produced, not written yet
        self.ended = False
        self.failed: int | None = None  # the HTTP status of the error that answers the request
        self.started = False  # the status line is written
        self.mode = LENGTH
        self.no_body = is_head
        self.request_done = False
        self.continue_wanted = False  # Expect: 100-continue, not answered yet
        self.rendered = 0  # body bytes the last render() put in the connection's output

    # -- the responder --------------------------------------------------------------------------------
    def meta(self, meta) -> None:
        if self.started or self.failed is not None:
            return
        try:
            self.status, self.headers = parse_meta(meta)
        except BadMeta as e:
            server = self.conn.server
            log.warning("app %s: task %s: bad response metadata: %s", server.context.app, server.context.task, e)
            self.handle.cancel(Code.SERVER, f"bad response metadata: {e}")

    def chunk(self, data: bytes) -> None:
        if self.failed is None and data:
            self.chunks.append(data)
            self.conn.buffered(len(data))

    def end(self) -> None:
        self.ended = True
        self.conn.dirty()

    def error(self, code: int, message: str) -> None:
        self.failed = ERRORS.get(code, 500)
        self.conn.server.counters["errors"] += 1
        log.debug("app %s: task %s: %s: error %s %s", self.conn.server.context.app, self.conn.server.context.task,
                  self.conn.peer, code, message)
        self.conn.dirty()

    # -- writing --------------------------------------------------------------------------------------
    def render(self, out: bytearray) -> bool:
        """Append what is ready of the response to ``out``; True once the response is complete."""
        if self.failed is not None:
            if self.started:
                raise Abort
            # A malformed request ends the connection; so does an answer that left the request body unread.
            self.keep_alive = self.keep_alive and self.request_done and self.failed != 400
            self.chunks = []
            out += error_response(self.failed, self.keep_alive, self.http10, self.is_head)
            return True
        chunks = self.chunks
        size = len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
        self.rendered = 0
        if not self.started:
            if not chunks and not self.ended:
                return False
            self.started = True
            # A response that ends before its request body was read ends the connection too.
            self.keep_alive = self.keep_alive and self.request_done
            status = self.status
            if status in (204, 304):
                self.no_body, framing = True, b""
            elif self.ended:
                framing = b"Content-Length: %d\r\n" % size
            elif not self.http10:
                self.mode, framing = CHUNKED, b"Transfer-Encoding: chunked\r\n"
            else:  # HTTP/1.0 has no chunks: the body ends when the connection does
                self.mode, framing, self.keep_alive = UNTIL_CLOSE, b"", False
            out += head(status, self.headers, framing, self.keep_alive, self.http10)
        if chunks and self.no_body:  # dropped: the handler may go on at once
            self.handle.drained(size)
        elif chunks:
            self.rendered = size
            if self.mode == CHUNKED:
                for data in chunks:
                    out += b"%x\r\n" % len(data)
                    out += data
                    out += b"\r\n"
            else:
                for data in chunks:
                    out += data
        self.chunks = []
        if self.ended:
            if self.mode == CHUNKED and not self.no_body:
                out += b"0\r\n\r\n"
            return True
        return False


class Connection:
    """One client connection; also the httptools parser's callback object."""

    def __init__(self, server, sock: socket.socket, peer) -> None:
        self.server = server
        self.config = config = server.config
        self.max_head = config["max-header-size"]
        self.max_body = config["max-body-size"]
        self.stream_threshold = config["stream-threshold"]
        self.write_buffer = config["write-buffer"]
        self.timeout = config.get("timeout")
        self.reactor = server.context.reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = f"{peer[0]}:{peer[1]}"
        self.parser = httptools.HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()  # requests whose responses are not all written
        self.out = bytearray()
        # [exchange, bytes of out, body bytes not granted yet]: whose bytes out holds, in order,
        # after the ``unmarked`` bytes at its head: complete responses, whose jobs take no grants
        self.marks: deque[list] = deque()
        self.unmarked = 0
        self.pending = 0  # response bytes produced but not in ``out`` yet (later pipelined responses)
        self.reading = False
        self.writing = False
        self.is_dirty = False
        self.is_closed = False
        self.closing = False  # no more requests: close once the queued responses are written
        self.discarding = False  # closing: what the client still sends is dropped
        self.linger = None
        self.phase = IDLE
        self.since = time.monotonic()  # when the phase began (or the body last moved)
        self.unconsumed = 0  # streamed request bytes the handler has not taken yet
        # the request being parsed
        self.current: Exchange | None = None
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []  # the header fields as sent
        self.head_size = 0
        self.consumed = 0  # bytes of the current feed that callbacks accounted for
        self.progressed = False  # a URL or header completed during the current feed
        self.stalled = 0  # bytes of an unfinished URL or header (inside the parser)
        self.meta: dict | None = None
        self.streamed = False
        self.body: list[bytes] = []
        self.body_size = 0

    def start(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # streamed chunks leave as they come
        self.server.poller.register(self.fd, 0)
        self._read_again()

    def _interest(self) -> None:
        """Tell the server's epoll what this connection waits for."""
        self.server.poller.modify(self.fd, (EPOLLIN if self.reading else 0) | (EPOLLOUT if self.writing else 0))

    def on_events(self, events: int) -> None:
        """The server's epoll says the socket is ready (``events``, an epoll mask)."""
        if events & EPOLLOUT and self.writing:
            self._send()
        if self.reading:
            if events & (EPOLLIN | EPOLLHUP | EPOLLERR):
                self._on_readable()
        elif events & (EPOLLHUP | EPOLLERR) and not self.is_closed:
            self._gone()  # reported even when not asked for: the peer is gone

    # -- parsing (httptools callbacks) ------------------------------------------------------------------
    # The request path is the product's speed: these run for every request, so they do little.
    def on_message_begin(self) -> None:
        self.phase = HEAD
        self.since = self.server.now
        self.url = b""
        self.fields = []
        self.head_size = 0
        self.stalled = 0
        self.body = []
        self.body_size = 0

    # on_url and on_header account for what the head has grown by (consumed, head_size), inline.
    def on_url(self, url: bytes) -> None:
        self.url += url
        size = len(url)
        self.progressed = True
        self.consumed += size
        self.head_size += size
        if self.head_size > self.max_head:
            raise Refused(431, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))
        size = len(name) + len(value) + 4  # "name: value\r\n"
        self.progressed = True
        self.consumed += size
        self.head_size += size
        if self.head_size > self.max_head:
            raise Refused(431, "request head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = _headers(self.fields)
        version = parser.get_http_version()
        raw_method = parser.get_method()
        method = METHODS.get(raw_method) or raw_method.decode("latin-1")
        self.consumed += len(method) + 13  # " HTTP/1.1\r\n" and the blank line
        exchange = self.current = Exchange(self, method == "HEAD", parser.should_keep_alive(), version == "1.0")
        self.exchanges.append(exchange)
        self.phase = BODY
        self.since = self.server.now
        url = self.url
        if url[:1] == b"/":  # origin form, as nearly every request
            path, _, query = url.partition(b"?")
            path, query = path.decode("latin-1"), query.partition(b"#")[0].decode("latin-1") if query else ""
        else:
            path, query = _split_target(url)
        meta = {"method": method, "path": path, "query": query, "version": version, "headers": headers,
                "peer": self.peer}
        encoding = headers.get("transfer-encoding")
        chunked = encoding is not None and "chunked" in encoding.lower()
        size = int(headers.get("content-length") or 0)  # llhttp checked it is a number
        if size > self.max_body:
            raise Refused(413, f"body of {size} bytes")
        if (chunked or size > 0) and "expect" in headers and headers["expect"].lower() == "100-continue":
            exchange.continue_wanted = True
            self.dirty()
        self.server.counters["requests"] += 1
        if chunked or size > self.stream_threshold:
            self.streamed = True
            self.server.counters["streamed"] += 1
            exchange.handle = self.server.context.open_job(exchange, meta, stream=True, on_credit=self.credit,
                                                           timeout=self.timeout, paced=True)
        else:
            self.meta = meta

    def on_chunk_complete(self) -> None:
        self.consumed += 8  # about the chunk's size line and CRLF

    def on_body(self, data: bytes) -> None:
        size = len(data)
        self.consumed += size
        self.body_size += size
        if self.body_size > self.max_body:
            raise Refused(413, f"body above {self.max_body} bytes")
        self.since = self.server.now
        if not self.streamed:
            self.body.append(data)
            return
        handle = self.current.handle
        if not handle.done:  # else the response is out already: the rest of the body is dropped
            self.unconsumed += len(data)
            handle.push(data)
            if self.unconsumed >= REQUEST_WINDOW:
                self._pause()  # until the handler takes some (credit)

    def on_message_complete(self) -> None:
        exchange, self.current = self.current, None
        exchange.request_done = True
        exchange.continue_wanted = False
        if self.streamed:
            self.streamed = False
            exchange.handle.close()
        else:
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.body = []
            exchange.handle = self.server.context.open_job(exchange, self.meta, body=body, timeout=self.timeout,
                                                           paced=True)
            self.meta = None
        self.phase = BUSY
        if len(self.exchanges) >= MAX_PIPELINE:
            self._pause()

    def credit(self, nbytes: int) -> None:
        self.unconsumed -= nbytes
        self._read_again()

    # -- reading --------------------------------------------------------------------------------------
    def _read_again(self) -> None:
        if (not self.reading and not self.is_closed and not self.closing and self.unconsumed < REQUEST_WINDOW
                and len(self.exchanges) < MAX_PIPELINE):
            self.reading = True
            self._interest()

    def _pause(self) -> None:
        if self.reading:
            self.reading = False
            self._interest()

    def _on_readable(self) -> None:
        while self.reading:
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._gone()
                return
            if not data:
                self._input_ended()
                return
            if self.discarding:
                continue
            self.progressed = False
            self.consumed = 0
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserCallbackError as e:
                cause = e.__context__
                if not isinstance(cause, Refused):
                    log.error("app %s: task %s: %s: request failed in the driver", self.server.context.app,
                              self.server.context.task, self.peer, exc_info=cause)
                    cause = Refused(500, "driver error")
                self.refuse(cause.status, str(cause))
                return
            except httptools.HttpParserUpgrade:
                # Protocol switches (WebSocket, h2c) are not served: the request gets its response, then
                # the connection closes, since what follows is not HTTP/1.
                if self.current is not None:
                    self.refuse(400, "protocol upgrade requested")
                else:
                    self._stop_reading()
                return
            except httptools.HttpParserError as e:
                self.refuse(400, f"malformed request: {e}")
                return
            if self.phase == HEAD:  # a URL or header that never ends would grow inside the parser
                self.stalled = max(0, len(data) - self.consumed) if self.progressed else self.stalled + len(data)
                if self.head_size + self.stalled > self.max_head:
                    self.refuse(431, "request head too large")
                    return
            if len(data) < READ_SIZE:
                return  # drained, most likely: the poll is level-triggered, so spare a recv that fails

    def _input_ended(self) -> None:
        """The client closed its side: serve what was asked, then close."""
        if self.discarding:
            self.close()
            return
        if self.current is not None:  # a request cut short: nobody waits for its answer
            self._cancel(self.current, "the client closed the connection mid-request")
            self.exchanges.remove(self.current)
            self.current = None
        self._stop_reading()
        if not self.exchanges and not self.out:
            self.close()

    def _stop_reading(self) -> None:
        self.closing = True
        self._pause()
        self.phase = BUSY

    def refuse(self, status: int, reason: str) -> None:
        """Answer the request being parsed (or a new one) with ``status``, then close."""
        counters = self.server.counters
        counters["timed-out" if status == 408 else "refused"] += 1
        log.debug("app %s: task %s: %s: %d %s", self.server.context.app, self.server.context.task, self.peer,
                  status, reason)
        exchange = self.current
        if exchange is None:
            exchange = Exchange(self, False, False, False)
            self.exchanges.append(exchange)
        elif exchange.handle is not None:
            self._cancel(exchange, reason, Code.BAD_REQUEST)
        self.current = None
        exchange.failed = status
        exchange.keep_alive = False
        exchange.continue_wanted = False
        self._stop_reading()
        self.dirty()

    def timed_out(self, phase: int) -> None:
        if phase == IDLE:
            self.close()  # keep-alive ends quietly
        else:
            self.refuse(408, "request head too slow" if phase == HEAD else "request body stalled")

    # -- writing --------------------------------------------------------------------------------------
    def buffered(self, size: int) -> None:
        self.pending += size
        if self.pending + len(self.out) > self.write_buffer:
            self.server.counters["too-slow"] += 1
            self._reset("the client reads too slowly")
        elif not self.is_dirty and not self.is_closed:  # dirty(), inline: this runs for every chunk
            self.is_dirty = True
            self.server.dirty.append(self)

    def dirty(self) -> None:
        if not self.is_dirty and not self.is_closed:
            self.is_dirty = True
            self.server.dirty.append(self)

    def flush(self) -> None:
        """Write what the responses at the head of the queue have ready (the server's flusher)."""
        self.is_dirty = False
        if self.is_closed:
            return
        out = self.out
        exchanges = self.exchanges
        before = len(out)
        try:
            while exchanges:
                exchange = exchanges[0]
                start = len(out)
                if exchange.continue_wanted and exchange.failed is None:
                    exchange.continue_wanted = False
                    out += CONTINUE
                complete = exchange.render(out)
                if len(out) > start:
                    if complete and not self.marks:  # answered: nothing to grant (most responses)
                        self.unmarked += len(out) - start
                    else:
                        self.marks.append([exchange, len(out) - start, exchange.rendered])
                if not complete:
                    break
                exchanges.popleft()
                if not exchange.keep_alive:
                    self._stop_reading()
                    for later in exchanges:
                        self._cancel(later, "the connection is closing")
                    exchanges.clear()
                elif not exchanges and self.current is None and not self.closing:
                    self.phase = IDLE
                    self.since = self.server.now
        except Abort:
            self._reset("the response failed after it started")
            return
        pending = self.pending - (len(out) - before)
        self.pending = pending if pending > 0 else 0
        self._send()
        if not self.reading and not self.is_closed:
            self._read_again()

    def _send(self) -> None:
        out = self.out
        counters = self.server.counters
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._gone()
                return
            counters["bytes-out"] += sent
            del out[:sent]
            if sent <= self.unmarked:  # most often: complete responses only, nothing to grant
                self.unmarked -= sent
            else:
                self._drained(sent)
        if out:
            if not self.writing:
                self.writing = True
                self._interest()
            return
        if self.writing:
            self.writing = False
            self._interest()
        if self.closing and not self.exchanges:
            self._finish()

    def _drained(self, sent: int) -> None:
        """Grant the responses whose bytes the socket just took, beyond the ``unmarked`` ones at the
        head of ``out`` (framing counted as body, at most the body's size, so the grant stays within
        a chunk's framing of the truth). ``sent`` is more than ``unmarked`` (see _send)."""
        sent -= self.unmarked
        self.unmarked = 0
        marks = self.marks
        while sent and marks:
            mark = marks[0]
            taken = min(sent, mark[1])
            sent -= taken
            mark[1] -= taken
            grant = mark[2] if not mark[1] else min(mark[2], taken)
            if grant:
                mark[2] -= grant
                handle = mark[0].handle
                if handle is not None:
                    handle.drained(grant)
            if not mark[1]:
                marks.popleft()

    def _finish(self) -> None:
        """The last response is out: close our side, drain the client's input a little while (closing
        with unread input would reset the connection under the response), then close."""
        if self.discarding:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.discarding = True
        self.reading = True
        self._interest()
        self.linger = self.reactor.call_later(LINGER, self.close)

    # -- ending ---------------------------------------------------------------------------------------
    def _cancel(self, exchange: Exchange, reason: str, code: int = Code.UNAVAILABLE) -> None:
        if exchange.handle is not None:
            exchange.handle.cancel(code, reason)

    def _gone(self) -> None:
        self.server.counters["client-gone"] += 1
        self.close()

    def _reset(self, reason: str) -> None:
        """Close with a reset (RST), so that the client sees the response is not complete."""
        log.debug("app %s: task %s: %s: reset: %s", self.server.context.app, self.server.context.task, self.peer,
                  reason)
        if not self.is_closed:
            reset_on_close(self.sock)
            self.close()

    def close(self) -> None:
        """Close now; the jobs of requests still unanswered are cancelled (the client is gone)."""
        if self.is_closed:
            return
        self.is_closed = True
        self.reading = self.writing = False
        self.server.poller.unregister(self.fd)
        if self.linger is not None:
            self.linger.cancel()
        exchanges, self.exchanges = self.exchanges, deque()
        for exchange in exchanges:
            self._cancel(exchange, "the client is gone")
        self.sock.close()
        self.parser = None  # it holds this connection's callbacks: a cycle only the cyclic collector would free
        self.server.closed(self)


#: The methods clients send, as text, without a decode per request.
METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
#: Header names as clients spell them -> their lower-cased text: the few names clients send are
#: looked up rather than lowered and decoded per request. At most NAMES_KEPT, so that a client
#: inventing names cannot grow it.
_names: dict[bytes, str] = {}
NAMES_KEPT = 512


def _name(raw: bytes) -> str:
    name = raw.lower().decode("latin-1")
    if len(_names) < NAMES_KEPT:
        _names[raw] = name
    return name


def _headers(fields: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The header fields as a map of lower-cased name to value (latin-1 text); a repeated name's
    values are joined with ", " ("; " for cookie)."""
    names = _names
    headers = {names.get(name) or _name(name): value.decode("latin-1") for name, value in fields}
    if len(headers) == len(fields):
        return headers
    headers = {}
    for name, value in fields:
        key, text = name.lower().decode("latin-1"), value.decode("latin-1")
        previous = headers.get(key)
        headers[key] = text if previous is None else previous + ("; " if key == "cookie" else ", ") + text
    return headers


def _split_target(url: bytes) -> tuple[str, str]:
    """The request target's path and raw query (latin-1 text, undecoded); absolute-form targets
    (``http://host/path``) give their path."""
    if not url.startswith(b"/"):
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return url.decode("latin-1"), ""
        return (parsed.path or b"/").decode("latin-1"), (parsed.query or b"").decode("latin-1")
    path, _, query = url.partition(b"?")
    query = query.partition(b"#")[0]
    return path.partition(b"#")[0].decode("latin-1"), query.decode("latin-1")
