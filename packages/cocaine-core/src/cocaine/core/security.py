"""The daemon's network-facing ZeroMQ sockets: a maximum message size, and optional CurveZMQ.

Every socket that faces the network (management, a zeromq-server's ROUTER, an app's pubsub PUB, and
any driver's server socket) is made by :meth:`SocketSecurity.socket` or :meth:`SocketSecurity.bind`,
which drivers reach as ``TaskContext.server_socket`` / ``TaskContext.secure``. So one daemon option
protects them all (docs/security.md):

- ``maxmsgsize``: a peer that sends a larger frame is disconnected by ZeroMQ before the daemon sees it.
- With CURVE configured, each such socket is a CURVE server with the daemon's key pair, and a ZAP
  handler (pyzmq's ``ThreadAuthenticator``) admits only the client public keys found in the allowed
  folders: one for the ``management`` ZAP domain, one for ``apps``. Refused keys are counted and logged.

Workers' sockets (ipc in the 0700 runtime folder, or inproc) are not network-facing and stay plain.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from cocaine.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
MANAGEMENT = "management"
APPS = "apps"
DOMAINS = (MANAGEMENT, APPS)


def load_server_key(path: str) -> tuple[bytes, bytes]:
    """The (public, secret) z85 key pair of a ZeroMQ certificate file with a secret key."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--curve-secret-key {path}: cannot load a ZeroMQ certificate: {e}") from None
    if not secret:
        raise ConfigError(f"--curve-secret-key {path}: holds no secret key (give the .key_secret file)")
    return public, secret


def load_client_keys(folder: str) -> frozenset[bytes]:
    """The z85 public keys of every ``*.key`` certificate in ``folder``."""
    if not os.path.isdir(folder):
        raise ConfigError(f"CURVE client keys {folder}: not a folder")
    try:
        return frozenset(zmq.auth.load_certificates(folder))
    except (OSError, ValueError) as e:
        raise ConfigError(f"CURVE client keys {folder}: cannot load the certificates: {e}") from None


class Curve:
    """The daemon's CURVE key pair, the allowed client keys per ZAP domain, and the ZAP handler."""

    def __init__(self, secret_key_file: str, clients: dict[str, str]) -> None:
        self.public_key, self.secret_key = load_server_key(secret_key_file)
        self.folders = clients  # ZAP domain -> folder of allowed client certificates
        self.allowed: dict[str, frozenset[bytes]] = {}
        self.refused: Counter[str] = Counter()
        self.admitted: Counter[str] = Counter()
        self._authenticator: ThreadAuthenticator | None = None
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Re-read the allowed client keys (at start and on SIGHUP)."""
        allowed = {}
        for domain, folder in self.folders.items():
            allowed[domain] = load_client_keys(folder)
            if not allowed[domain]:
                log.warning("curve: no client key in %s: no client can connect to %s endpoints", folder, domain)
        self.allowed = allowed

    def start(self, context: zmq.Context) -> None:
        """Start the ZAP handler; before any CURVE socket binds (without one, ZeroMQ admits anyone)."""
        authenticator = ThreadAuthenticator(context, log=logging.getLogger("cocaine.core.security.zap"))
        authenticator.start()
        for domain in DOMAINS:
            authenticator.configure_curve_callback(domain, credentials_provider=self)
        self._authenticator = authenticator

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP: admit a client's z85 public key on a domain (runs on the authenticator's thread)."""
        allowed = client_key in self.allowed.get(domain, ())
        with self._lock:
            (self.admitted if allowed else self.refused)[domain] += 1
        if not allowed:
            log.warning("curve: refused an unknown client key %s on the %s endpoints",
                        client_key.decode(errors="replace"), domain)
        return allowed

    def info(self) -> dict[str, Any]:
        return {
            "public-key": self.public_key.decode(),
            "clients": {domain: len(self.allowed.get(domain, ())) for domain in DOMAINS},
            "admitted": {domain: self.admitted[domain] for domain in DOMAINS},
            "refused": {domain: self.refused[domain] for domain in DOMAINS},
        }


class SocketSecurity:
    """How the daemon makes its network-facing sockets."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, curve: Curve | None = None) -> None:
        self.max_message_size = max_message_size
        self.curve = curve

    def secure(self, sock: zmq.Socket, domain: str = APPS, *, server: bool = True) -> zmq.Socket:
        """Apply the message size limit and, for a socket that binds (``server``) and if configured,
        CURVE. Call before ``bind`` or ``connect``."""
        sock.maxmsgsize = self.max_message_size
        if server and self.curve is not None:
            sock.curve_server = True
            sock.curve_secretkey = self.curve.secret_key
            sock.curve_publickey = self.curve.public_key
            sock.zap_domain = domain.encode()
        return sock

    def socket(self, context: zmq.Context, socket_type: int, domain: str = APPS) -> zmq.Socket:
        """A new, secured, unbound socket with ``linger`` 0."""
        sock = context.socket(socket_type)
        sock.linger = 0
        return self.secure(sock, domain)

    def bind(self, context: zmq.Context, socket_type: int, endpoint: str, domain: str = APPS) -> zmq.Socket:
        """A secured socket bound to ``endpoint``; closed again if the bind fails."""
        sock = self.socket(context, socket_type, domain)
        try:
            sock.bind(endpoint)
        except BaseException:
            sock.close(0)
            raise
        return sock

    def info(self) -> dict[str, Any]:
        return {"max-message-size": self.max_message_size,
                "curve": self.curve.info() if self.curve is not None else None}
