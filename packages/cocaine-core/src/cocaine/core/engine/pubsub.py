"""The app's pubsub endpoint: results of jobs nobody waits for (timers, monitors, sinks), and the
engine's own events.

Each message is ``[topic, meta, *payload]``, where ``meta`` is JSON with node, app and timestamp:

- ``"<task> result"``: a job's response chunks as payload (meta adds ``task`` and the job's metadata);
- ``"<task> error"``: one JSON payload frame ``{"code", "message"}``;
- ``"@engine <event>"``: started, reloaded, stopped, broken (meta adds ``reason``), recovered.
  Task names cannot start with ``@``, so no task's topic collides with these.

Subscribers filter by prefix: ``"<task>"`` gets a task's results and errors, ``"@engine"`` the events.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import zmq

from cocaine.core.security import SocketSecurity
from cocaine.core.transport import NOBLOCK, send_frames

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, zmq_context: zmq.Context, app: str, endpoint: str | None,
                 security: SocketSecurity | None = None) -> None:
        self.app = app
        self.node = socket.gethostname()
        self.sock = None
        if endpoint is not None:
            self.sock = (security or SocketSecurity()).socket(zmq_context, zmq.PUB)
            # A slow subscriber loses messages rather than growing the daemon's memory.
            self.sock.sndhwm = 10_000
            try:
                self.sock.bind(endpoint)
            except zmq.ZMQError:
                self.close()
                raise

    def publish(self, topic: str, meta: dict[str, Any], payload: list[bytes]) -> None:
        if self.sock is None:
            return
        header = {"node": self.node, "app": self.app, "timestamp": time.time(), **meta}
        try:
            send_frames(self.sock, [topic.encode(), json.dumps(header).encode(), *payload], NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks; dropping is the documented behaviour for slow subscribers

    def event(self, kind: str, meta: dict[str, Any]) -> None:
        self.publish(f"@engine {kind}", meta, [])

    def responder(self, task: str, meta: dict[str, Any]) -> PublishingResponder:
        return PublishingResponder(self, task, meta)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


class PublishingResponder:
    """Collects a job's chunks and publishes them as one message once the job ends."""

    __slots__ = ("publisher", "task", "meta", "chunks")

    def __init__(self, publisher: Publisher, task: str, meta: dict[str, Any]) -> None:
        self.publisher = publisher
        self.task = task
        self.meta = meta
        self.chunks: list[bytes] = []

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def end(self) -> None:
        self.publisher.publish(f"{self.task} result", {"task": self.task, **self.meta}, self.chunks)

    def error(self, code: int, message: str) -> None:
        body = json.dumps({"code": code, "message": message}).encode()
        self.publisher.publish(f"{self.task} error", {"task": self.task, **self.meta}, [body])
