"""The management client: one JSON request, one JSON reply, never waiting past the timeout."""

from __future__ import annotations

import json
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from cocaine.cli.errors import BadReply, CurveRefused, EndpointError, Unreachable
from cocaine.cli.keys import CurveClient, Signer
from cocaine.core.management import UNSIGNED_VERSION
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5000"
DEFAULT_TIMEOUT = 10.0


class ManagementClient:
    """Talks to one cocained management endpoint; each :meth:`request` uses a fresh socket.

    With a ``signer`` every request is signed (version 3); with ``curve`` the connection is
    encrypted and authenticated by CurveZMQ (docs/security.md).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = DEFAULT_TIMEOUT, *,
                 signer: Signer | None = None, curve: CurveClient | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.signer = signer
        self.curve = curve

    def request(self, action: str, apps: Any = None, **fields: Any) -> dict[str, Any]:
        """Send ``{"version": 2, "action": action, "apps": apps, **fields}`` (signed as version 3
        with a signer) and return the daemon's reply.

        :raises Unreachable: no reply within ``timeout`` seconds (daemon down, wrong address, busy).
        :raises EndpointError: ZeroMQ rejects the endpoint itself.
        :raises BadReply: the reply is not a JSON object.
        """
        message: dict[str, Any] = {"version": UNSIGNED_VERSION, "action": action}
        if apps is not None:
            message["apps"] = apps
        message.update({key: value for key, value in fields.items() if value is not None})
        frames = self.signer.frames(message) if self.signer else [json.dumps(message).encode()]
        raw = self._exchange(frames)
        try:
            reply = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadReply(f"{self.endpoint} answered something that is not JSON: {e}") from None
        if not isinstance(reply, dict):
            raise BadReply(f"{self.endpoint} answered a JSON {type(reply).__name__}, expected an object")
        return reply

    def _exchange(self, frames: list[bytes]) -> bytes:
        deadline = time.monotonic() + self.timeout
        # A private context, destroyed with linger 0: nothing queued for a dead daemon can keep the
        # process alive after the timeout.
        context = zmq.Context()
        try:
            sock = context.socket(zmq.REQ)
            sock.linger = 0
            if self.curve is not None:
                self.curve.apply(sock)
            try:
                sock.connect(self.endpoint)
            except zmq.ZMQError as e:
                raise EndpointError(f"--endpoint {self.endpoint}: {e.strerror}") from e
            # REQ queues the message until a peer connects, so send does not block; the wait is
            # all in the poll, bounded by the one deadline.
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            monitor = None
            if self.curve is not None:
                # A refused CURVE key is otherwise silence: say so instead of timing out.
                monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
                poller.register(monitor, zmq.POLLIN)
            sock.send_multipart(frames)
            while True:
                ready = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
                if sock in ready:
                    return sock.recv()
                if monitor is None or monitor not in ready:
                    raise Unreachable(f"no answer from {self.endpoint} within {self.timeout:g} s")
                if recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    raise CurveRefused(f"{self.endpoint} refused this client's CURVE key (--curve-key)")
        finally:
            context.destroy(linger=0)
