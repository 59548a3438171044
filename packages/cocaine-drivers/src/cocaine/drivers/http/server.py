"""``http-server``: HTTP/1.1 and 1.0 clients call the app's handler (docs/http.md).

The listener and every connection run on the app's reactor with non-blocking sockets. The
connections are watched by an epoll of the driver's own, which the reactor polls as one descriptor:
the reactor's poll set (and so the cost of every round, for every task of the app) does not grow
with the number of open connections, idle or busy. A sweep timer enforces the keep-alive, header
and body timeouts, and a reactor flusher writes each round's response output (see
:mod:`cocaine.drivers.http.connection`).
"""

from __future__ import annotations

import select
import time

from cocaine.core.plugin_api import get_int, get_number, only_keys
from cocaine.drivers.http.connection import BODY, HEAD, IDLE, Connection
from cocaine.drivers.tcp import TcpServer, parse_address

SWEEP_MAX = 1.0  # seconds between timeout sweeps, at most
EVENTS_PER_WAKE = 256  # ready connections served per reactor round (the rest: the next round)


class HttpServer(TcpServer):
    name = "http-server"

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "endpoint", "max-connections", "backlog", "max-header-size", "max-body-size",
                           "stream-threshold", "keepalive-timeout", "header-timeout", "body-timeout",
                           "write-buffer", "timeout"), where)
        parse_address(config.get("endpoint"), f"{where}.endpoint")
        normalized = {
            "type": cls.name,
            "endpoint": config["endpoint"],
            "max-connections": get_int(config, "max-connections", where, default=1024, minimum=1),
            "backlog": get_int(config, "backlog", where, default=1024, minimum=1),
            "max-header-size": get_int(config, "max-header-size", where, default=16 * 1024, minimum=256),
            "max-body-size": get_int(config, "max-body-size", where, default=64 * 1024 * 1024, minimum=0),
            "stream-threshold": get_int(config, "stream-threshold", where, default=256 * 1024, minimum=0),
            "keepalive-timeout": get_number(config, "keepalive-timeout", where, default=15),
            "header-timeout": get_number(config, "header-timeout", where, default=10),
            "body-timeout": get_number(config, "body-timeout", where, default=60),
            "write-buffer": get_int(config, "write-buffer", where, default=4 * 1024 * 1024, minimum=1),
        }
        if "timeout" in config:
            normalized["timeout"] = get_number(config, "timeout", where)
        return normalized

    def start(self) -> None:
        self.counters = dict.fromkeys(("connections", "requests", "streamed", "errors", "refused", "timed-out",
                                       "client-gone", "too-slow", "bytes-out"), 0)
        self.dirty: list[Connection] = []
        # The clock of the connections' timeouts, read once per wake-up rather than per request:
        # timeouts are whole seconds, checked by the sweep at most once a second.
        self.now = time.monotonic()
        config = self.config
        self.limits = {IDLE: config["keepalive-timeout"], HEAD: config["header-timeout"], BODY: config["body-timeout"]}
        self.sweep_every = min(SWEEP_MAX, *(limit / 4 for limit in self.limits.values()))
        self.poller = select.epoll()
        self.context.reactor.add_reader(self.poller.fileno(), self._on_events)
        super().start()
        self.context.reactor.add_flusher(self._flush)
        self.sweeper = self.context.reactor.call_later(self.sweep_every, self._sweep)

    def connect(self, sock, peer) -> None:
        self.counters["connections"] += 1
        connection = Connection(self, sock, peer)
        self.connections[connection.fd] = connection
        connection.start()

    def _on_events(self) -> None:
        self.now = time.monotonic()
        connections = self.connections
        for fd, events in self.poller.poll(0, EVENTS_PER_WAKE):
            connection = connections.get(fd)
            if connection is not None:
                connection.on_events(events)

    def _flush(self) -> None:
        dirty = self.dirty
        if dirty:
            self.now = time.monotonic()
        while dirty:
            batch, self.dirty = dirty, []
            for connection in batch:
                connection.flush()
            dirty = self.dirty

    def _sweep(self) -> None:
        now = self.now = time.monotonic()
        limits = self.limits
        for connection in list(self.connections.values()):
            limit = limits.get(connection.phase)
            # A connection paused by flow control is waiting for its handler, not for its client.
            if limit is not None and connection.reading and now - connection.since > limit:
                connection.timed_out(connection.phase)
        self.sweeper = self.context.reactor.call_later(self.sweep_every, self._sweep)

    def stop(self) -> None:
        if hasattr(self, "sweeper"):
            self.sweeper.cancel()
            self._flush()  # the answers the engine gave while stopping, before the connections close
            self.context.reactor.remove_flusher(self._flush)
        super().stop()
        if hasattr(self, "poller"):
            self.context.reactor.remove_reader(self.poller.fileno())
            self.poller.close()

    def info(self):
        return {**super().info(), "counters": {**self.counters, "open": len(self.connections),
                                               "accepting": self.accepting}}
