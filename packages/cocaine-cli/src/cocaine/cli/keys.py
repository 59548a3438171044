"""Keys on the operator's side: making them (``keygen``), signing requests, CURVE client settings.

A signed (version 3) request is the JSON request with ``username``, ``timestamp`` and ``nonce``
added, followed by a second frame: the signature of the JSON bytes, made by
``cocaine.core.management.signing.sign`` (docs/security.md).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from cocaine.cli.errors import KeyFileError
from cocaine.core.management import SIGNED_VERSION
from cocaine.core.management.signing import sign

KEY_TYPES = ("ed25519", "rsa")


# -- making keys ----------------------------------------------------------------------------------
def _refuse_existing(*paths: str) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise KeyFileError(f"{path} exists; not overwriting it")


def _write(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start: a secret is never readable by others, even briefly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_signing_key(path: str, kind: str = "ed25519", bits: int = 3072) -> tuple[str, str]:
    """Write a private key to ``path`` (PKCS#8 PEM, mode 0600) and its public key to ``path.pub``
    (PEM, 0644); return both paths."""
    public_path = path + ".pub"
    _refuse_existing(path, public_path)
    if kind == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(path, private, 0o600)
    _write(public_path, public, 0o644)
    return path, public_path


def generate_curve_key(path: str) -> tuple[str, str]:
    """Write a ZeroMQ CURVE certificate pair: ``path.key_secret`` (0600) and ``path.key`` (0644),
    the format ``zmq.auth`` and ``cocained --curve-*`` read; return (public, secret) paths."""
    folder, name = os.path.split(os.path.abspath(path))
    public_path, secret_path = f"{path}.key", f"{path}.key_secret"
    _refuse_existing(public_path, secret_path)
    old = os.umask(0o077)  # pyzmq writes the files itself: make them private from the start
    try:
        zmq.auth.create_certificates(folder, name)
    except OSError as e:
        raise KeyFileError(f"cannot write {path}.key*: {e.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(public_path, 0o644)
    return public_path, secret_path


# -- using keys -----------------------------------------------------------------------------------
def _read_private(path: str) -> bytes:
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"private key {path} is accessible by others (mode {stat.S_IMODE(info.st_mode):o}); "
                               f"chmod 600 it")
        with open(path, "rb") as f:
            return f.read(1 << 16)
    except OSError as e:
        raise KeyFileError(f"cannot read private key {path}: {e.strerror}") from None


@dataclass
class Signer:
    """Signs requests as ``user`` with the private key in a PEM file."""

    user: str
    key: Any

    @classmethod
    def load(cls, user: str, path: str) -> Signer:
        data = _read_private(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise KeyFileError(f"private key {path} is encrypted; cocaine-admin needs an unencrypted key") from None
        except Exception:  # noqa: BLE001 - any parse failure is one message
            raise KeyFileError(f"{path} is not a PEM private key") from None
        if not isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)):
            raise KeyFileError(f"private key {path}: expected an Ed25519 or RSA key")
        return cls(user, key)

    def sign(self, data: bytes) -> bytes:
        return sign(self.key, data)

    def frames(self, message: dict[str, Any]) -> list[bytes]:
        """The two frames of a signed request: the JSON with the signed fields added, its signature."""
        signed = {**message, "version": SIGNED_VERSION, "username": self.user, "timestamp": time.time(),
                  "nonce": secrets.token_hex(16)}
        body = json.dumps(signed).encode()
        return [body, self.sign(body)]


@dataclass
class CurveClient:
    """A client CURVE key pair and the server's public key, applied to a socket before it connects."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def load(cls, client_secret_file: str, server_public_file: str) -> CurveClient:
        public, secret = _load_certificate(client_secret_file, "--curve-key")
        if not secret:
            raise KeyFileError(f"--curve-key {client_secret_file}: holds no secret key (give the .key_secret file)")
        server, _ = _load_certificate(server_public_file, "--curve-server-key")
        return cls(public, secret, server)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server


def _load_certificate(path: str, option: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{option} {path}: cannot load a ZeroMQ certificate: {e}") from None
