"""``raw-socket-server``: a plain TCP server; each connection is one streamed request.

Framing (docs/drivers.md): the bytes a client sends, until it shuts down its side of the
connection, are the request, handed to the handler in chunks as they arrive; the handler's response
chunks are written back as they come; when the response ends the server closes the connection. A
failed job resets the connection instead of closing it, so the client can tell.

Everything runs on the engine's reactor with non-blocking sockets: a client that sends faster than
the handler reads is held back by flow control (the server stops reading, TCP does the rest). The
response is paced the same way: each byte the socket takes is granted back to the worker, so a
handler that writes faster than its client reads waits for it, and the server holds at most the
worker's response window of it. A worker runtime that ignores grants is not slowed down: its
replies are buffered up to ``write-buffer`` bytes, then the client is cut off.
"""

from __future__ import annotations

import logging
import socket

from cocaine.core.plugin_api import REQUEST_WINDOW, Code, get_int, only_keys
from cocaine.drivers.tcp import TcpServer, parse_address, reset_on_close

log = logging.getLogger(__name__)

READ_SIZE = 65536
LINGER = 5.0  # seconds to wait for a client's end of request after the response, before closing


class RawSocketServer(TcpServer):
    name = "raw-socket-server"

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "endpoint", "max-connections", "backlog", "write-buffer"), where)
        parse_address(config.get("endpoint"), f"{where}.endpoint")
        return {
            "type": cls.name,
            "endpoint": config["endpoint"],
            "max-connections": get_int(config, "max-connections", where, default=256, minimum=1),
            "backlog": get_int(config, "backlog", where, default=128, minimum=1),
            "write-buffer": get_int(config, "write-buffer", where, default=4 * 1024 * 1024, minimum=1),
        }

    def start(self) -> None:
        self.counters = dict.fromkeys(("connections", "bytes-in", "bytes-out", "failed", "too-slow",
                                       "client-gone"), 0)
        super().start()

    def connect(self, sock, peer) -> None:
        self.counters["connections"] += 1
        connection = Connection(self, sock, peer)
        self.connections[connection.fd] = connection
        connection.start()

    def info(self):
        return {**super().info(), "counters": {**self.counters, "open": len(self.connections),
                                               "accepting": self.accepting}}


class Connection:
    """One client: the job's responder, the request's reader and the response's write buffer."""

    def __init__(self, server: RawSocketServer, sock: socket.socket, peer) -> None:
        self.server = server
        self.reactor = server.context.reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = f"{peer[0]}:{peer[1]}"
        self.handle = None
        self.unconsumed = 0  # request bytes pushed that the handler has not taken yet
        self.reading = False
        self.request_ended = False
        self.response_ended = False
        self.discarding = False  # the response is out: what the client still sends is dropped
        self.out = bytearray()
        self.writing = False
        self.is_closed = False
        self.linger = None

    def start(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # chunks leave as they come
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # notice peers that vanished
        self.handle = self.server.context.open_job(self, {"peer": self.peer}, stream=True, on_credit=self.credit,
                                                   paced=True)
        if not self.is_closed:
            self._read_again()

    # -- the request ----------------------------------------------------------------------------------
    def _read_again(self) -> None:
        if not self.reading and not self.request_ended and not self.is_closed:
            self.reading = True
            self.reactor.add_reader(self.fd, self._on_readable)

    def _pause(self) -> None:
        if self.reading:
            self.reading = False
            self.reactor.remove_reader(self.fd)

    def _on_readable(self) -> None:
        counters = self.server.counters
        while self.reading:
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._gone()
                return
            if not data:
                self.request_ended = True
                self._pause()
                if self.discarding:
                    self.close()
                else:
                    self.handle.close()
                return
            if self.discarding:
                continue
            counters["bytes-in"] += len(data)
            self.unconsumed += len(data)
            self.handle.push(data)
            if self.unconsumed >= REQUEST_WINDOW:
                self._pause()  # until the handler takes some (credit)

    def credit(self, nbytes: int) -> None:
        self.unconsumed -= nbytes
        if self.unconsumed < REQUEST_WINDOW:
            self._read_again()

    # -- the responder ----------------------------------------------------------------------------------
    def chunk(self, data: bytes) -> None:
        if self.is_closed:
            return
        self.out += data
        self._flush()
        if not self.is_closed and len(self.out) > self.server.config["write-buffer"]:
            self.server.counters["too-slow"] += 1
            self._abort("the client reads too slowly")

    def end(self) -> None:
        self.response_ended = True
        if not self.is_closed:
            self._flush()

    def error(self, code: int, message: str) -> None:
        if self.is_closed:
            return
        self.server.counters["failed"] += 1
        log.debug("app %s: task %s: %s: error %s %s", self.server.context.app, self.server.context.task,
                  self.peer, code, message)
        self._reset()

    def _flush(self) -> None:
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._gone()
                return
            self.server.counters["bytes-out"] += sent
            del out[:sent]
            self.handle.drained(sent)
        if out and not self.writing:
            self.writing = True
            self.reactor.add_writer(self.fd, self._flush)
        elif not out:
            if self.writing:
                self.writing = False
                self.reactor.remove_writer(self.fd)
            if self.response_ended:
                self._finish()

    def _finish(self) -> None:
        """The response is out: close our side; wait (a little) for the client to end its request,
        so that closing with unread data does not reset the connection under the response."""
        if self.request_ended:
            self.close()
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.discarding = True
        self._read_again()
        self.linger = self.reactor.call_later(LINGER, self.close)

    # -- ending ---------------------------------------------------------------------------------------
    def _gone(self) -> None:
        self.server.counters["client-gone"] += 1
        self._abort("the client is gone")

    def _abort(self, reason: str) -> None:
        """Stop the job (if it still runs) and reset the connection."""
        self._reset()
        if self.handle is not None:
            self.handle.cancel(Code.UNAVAILABLE, reason)

    def _reset(self) -> None:
        if not self.is_closed:
            reset_on_close(self.sock)
            self.close()

    def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        self._pause()
        if self.writing:
            self.writing = False
            self.reactor.remove_writer(self.fd)
        if self.linger is not None:
            self.linger.cancel()
        self.sock.close()
        self.server.closed(self)
