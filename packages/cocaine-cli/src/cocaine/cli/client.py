"""The management client: one JSON request, one JSON reply, never waiting past the timeout."""

from __future__ import annotations

import json
import time
from typing import Any

import zmq

from cocaine.cli.errors import BadReply, EndpointError, Unreachable

PROTOCOL_VERSION = 2
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5000"
DEFAULT_TIMEOUT = 10.0


class ManagementClient:
    """Talks to one cocained management endpoint; each :meth:`request` uses a fresh socket."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def request(self, action: str, apps: Any = None) -> dict[str, Any]:
        """Send ``{"version": 2, "action": action, "apps": apps}`` and return the daemon's reply.

        :raises Unreachable: no reply within ``timeout`` seconds (daemon down, wrong address, busy).
        :raises EndpointError: ZeroMQ rejects the endpoint itself.
        :raises BadReply: the reply is not a JSON object.
        """
        message: dict[str, Any] = {"version": PROTOCOL_VERSION, "action": action}
        if apps is not None:
            message["apps"] = apps
        raw = self._exchange(json.dumps(message).encode())
        try:
            reply = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadReply(f"{self.endpoint} answered something that is not JSON: {e}") from None
        if not isinstance(reply, dict):
            raise BadReply(f"{self.endpoint} answered a JSON {type(reply).__name__}, expected an object")
        return reply

    def _exchange(self, body: bytes) -> bytes:
        deadline = time.monotonic() + self.timeout
        # A private context, destroyed with linger 0: nothing queued for a dead daemon can keep the
        # process alive after the timeout.
        context = zmq.Context()
        try:
            sock = context.socket(zmq.REQ)
            sock.linger = 0
            try:
                sock.connect(self.endpoint)
            except zmq.ZMQError as e:
                raise EndpointError(f"--endpoint {self.endpoint}: {e.strerror}") from e
            # REQ queues the message until a peer connects, so send does not block; the wait is
            # all in the poll, bounded by the one deadline.
            sock.send(body)
            if not sock.poll(max(0, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
                raise Unreachable(f"no answer from {self.endpoint} within {self.timeout:g} s")
            return sock.recv()
        finally:
            context.destroy(linger=0)
