"""Requester-less ZeroMQ drivers: every message received is a job whose result is published.

- ``zeromq-sink`` ("request-publish"): a PULL socket bound to ``endpoint``.
- ``zeromq-subscriber`` ("publishing chain"): a SUB socket connected to one or many publishers,
  such as another app's pubsub endpoint, so apps can be chained.

Both hold at most ``max-in-flight`` jobs at once; beyond that they stop reading, and the messages
wait in the socket, up to ``backlog`` (its receive high-water mark). A PUSH peer then blocks, a
PUB peer drops: memory stays bounded either way.
"""

from __future__ import annotations

import json
import logging

import zmq

from cocaine.core.plugin_api import check_endpoint, get_int, get_str, only_keys
from cocaine.core.transport import recv_frames
from cocaine.drivers.common import Finished, SocketDriver, get_str_list

log = logging.getLogger(__name__)

FORMATS = ("raw", "cocaine")


class MessageSource(SocketDriver):
    """The shared part: a socket read on the reactor, one job per message, in-flight limit."""

    publishes = True
    socket_type = zmq.PULL
    KEYS: tuple[str, ...] = ("type", "endpoint", "backlog", "max-in-flight")

    @classmethod
    def validate(cls, config, where):
        only_keys(config, cls.KEYS, where)
        return {
            "type": cls.name,
            "backlog": get_int(config, "backlog", where, default=1000, minimum=1),
            "max-in-flight": get_int(config, "max-in-flight", where, default=100, minimum=1),
        }

    def start(self) -> None:
        self.received = 0
        self.in_flight = 0
        self.paused = False
        self.malformed = 0
        sock = self.sock = self.context.zmq_context.socket(self.socket_type)
        sock.linger = 0
        sock.rcvhwm = self.config["backlog"]
        self.setup(sock)
        self.context.reactor.add_reader(sock, self._on_readable)

    def setup(self, sock: zmq.Socket) -> None:
        raise NotImplementedError

    def job(self, frames: list[bytes]) -> tuple[bytes, dict] | None:
        """The body and meta of the job for one message, or None to drop it (malformed)."""
        raise NotImplementedError

    def _on_readable(self) -> None:
        sock = self.sock
        limit = self.config["max-in-flight"]
        while self.in_flight < limit:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            self.received += 1
            job = self.job(frames)
            if job is None:
                self.malformed += 1
                continue
            body, meta = job
            self.in_flight += 1
            self.context.submit(body, Finished(self.context.publisher(meta), self._done), meta)
        # Full: leave the rest in the socket until a job ends.
        self.paused = True
        self.context.reactor.remove_reader(self.sock)

    def _done(self, code: int | None) -> None:
        self.in_flight -= 1
        if self.paused and self.sock is not None:
            self.paused = False
            self.context.reactor.add_reader(self.sock, self._on_readable)

    def info(self):
        return {**super().info(), "counters": {"received": self.received, "in-flight": self.in_flight,
                                               "paused": self.paused, "malformed": self.malformed}}


def _body(frames: list[bytes]) -> bytes:
    """The frames of a message as one body (zero frames: empty)."""
    return frames[0] if len(frames) == 1 else b"".join(frames)


class ZeroMQSink(MessageSource):
    """``zeromq-sink``: a PULL socket; each message (its frames concatenated) is a job."""

    name = "zeromq-sink"
    socket_type = zmq.PULL

    @classmethod
    def validate(cls, config, where):
        normalized = super().validate(config, where)
        normalized["endpoint"] = check_endpoint(config.get("endpoint"), f"{where}.endpoint")
        return normalized

    def setup(self, sock: zmq.Socket) -> None:
        self.context.secure(sock)  # the daemon's message size limit and CURVE (docs/security.md)
        sock.bind(self.config["endpoint"])

    def job(self, frames):
        return _body(frames), {"message": self.received}


class ZeroMQSubscriber(MessageSource):
    """``zeromq-subscriber``: a SUB socket connected to each of ``endpoint``, subscribed to each
    prefix in ``subscription``. With ``format: raw`` the first frame is the topic (in meta) and the
    rest is the body; with ``format: cocaine`` messages are another app's publications."""

    name = "zeromq-subscriber"
    socket_type = zmq.SUB
    KEYS = (*MessageSource.KEYS, "subscription", "format")

    @classmethod
    def validate(cls, config, where):
        normalized = super().validate(config, where)
        endpoints = get_str_list(config, "endpoint", where)
        for i, endpoint in enumerate(endpoints):
            check_endpoint(endpoint, f"{where}.endpoint" if isinstance(config["endpoint"], str)
                           else f"{where}.endpoint[{i}]")
        normalized["endpoint"] = endpoints
        normalized["subscription"] = get_str_list(config, "subscription", where, default=[""], empty_ok=True)
        normalized["format"] = get_str(config, "format", where, default="raw", choices=FORMATS)
        return normalized

    def setup(self, sock: zmq.Socket) -> None:
        self.context.secure(sock, server=False)  # a client: the message size limit only
        for prefix in self.config["subscription"]:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        for endpoint in self.config["endpoint"]:
            sock.connect(endpoint)

    def job(self, frames):
        topic = frames[0].decode("utf-8", "replace")
        if self.config["format"] == "raw":
            return (_body(frames[1:]) if len(frames) > 1 else frames[0]), {"topic": topic}
        # A cocaine app's publication: [topic, JSON meta, *payload] (docs/drivers.md).
        try:
            upstream = json.loads(frames[1]) if len(frames) > 1 else None
        except ValueError:
            upstream = None
        if not isinstance(upstream, dict):
            log.warning("app %s: task %s: dropped a message that is not a cocaine publication (topic %r)",
                        self.context.app, self.context.task, topic)
            return None
        return _body(frames[2:]), {"topic": topic, "upstream": upstream}

