"""What the TCP drivers (``raw-socket-server``, ``http-server``) share: the endpoint syntax, and a
non-blocking listener on the reactor that stops accepting at ``max-connections``."""

from __future__ import annotations

import logging
import re
import socket
import struct

from cocaine.core.plugin_api import Driver, field_error

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"^(?:tcp://)?(?P<host>\*|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.:-]+?):(?P<port>\d{1,5})$")


def parse_address(value, where: str) -> tuple[str, int]:
    """``host:port`` (``*`` for every interface; ``tcp://`` allowed in front) -> (host, port)."""
    expected = "a TCP address host:port such as 127.0.0.1:9300 or *:9300"
    match = _ADDRESS.match(value) if isinstance(value, str) else None
    if not match or not 0 < int(match["port"]) < 65536:
        raise field_error(where, expected, value) if value is not None else field_error(where, expected)
    host = match["host"]
    return ("" if host == "*" else host.strip("[]")), int(match["port"])


def reset_on_close(sock: socket.socket) -> None:
    """Make closing ``sock`` reset the connection (RST), so the client sees its response is incomplete."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class TcpServer(Driver):
    """A driver that accepts TCP connections on the reactor. Subclasses implement ``connect(sock,
    peer)``, which registers the new connection in ``self.connections`` (fd -> connection), and
    call :meth:`closed` when a connection closes. Configs need ``endpoint``, ``backlog`` and
    ``max-connections``."""

    def start(self) -> None:
        self.connections: dict[int, object] = {}
        self.accepting = False
        host, port = parse_address(self.config["endpoint"], "endpoint")
        self.listener = socket.create_server((host, port), backlog=self.config["backlog"])
        self.listener.setblocking(False)
        self._accept_again()

    def connect(self, sock: socket.socket, peer) -> None:
        raise NotImplementedError

    def _accept_again(self) -> None:
        if not self.accepting and self.listener is not None:
            self.accepting = True
            self.context.reactor.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            if len(self.connections) >= self.config["max-connections"]:
                # Full: the next clients wait in the listen backlog until a connection closes.
                self.accepting = False
                self.context.reactor.remove_reader(self.listener.fileno())
                return
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ECONNABORTED, EMFILE...: try again on the next wake-up
                log.warning("app %s: task %s: accept failed: %s", self.context.app, self.context.task, e)
                return
            self.connect(sock, peer)

    def closed(self, connection) -> None:
        self.connections.pop(connection.fd, None)
        self._accept_again()

    def stop(self) -> None:
        listener, self.listener = getattr(self, "listener", None), None
        if listener is not None:
            self.context.reactor.remove_reader(listener.fileno())
            listener.close()
        for connection in list(getattr(self, "connections", {}).values()):
            connection.close()
