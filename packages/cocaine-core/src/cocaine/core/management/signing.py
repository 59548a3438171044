"""Public keys of management users, and checking the signatures of version 3 requests.

A signature covers the exact bytes of the request's JSON frame:

- **Ed25519** keys: a plain Ed25519 signature (64 bytes).
- **RSA** keys (2048 bits or more): RSASSA-PSS with SHA-256 and MGF1-SHA-256. Any salt length is
  accepted; :func:`sign` (``cocaine-admin``) uses 32 bytes (the digest length), as does
  ``openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest``.
  PKCS#1 v1.5 signatures are refused.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from cocaine.core.errors import ConfigError

MIN_RSA_BITS = 2048
MAX_SIGNATURE_BYTES = 1024  # RSA 8192 signs in 1024 bytes; anything longer is not a signature
MAX_KEY_CHARS = 16 << 10

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

#: RSASSA-PSS: the digest, and the salt length a signer uses (a verifier accepts any).
PSS_HASH = hashes.SHA256
PSS_SALT_BYTES = 32
_PSS_VERIFY = padding.PSS(mgf=padding.MGF1(PSS_HASH()), salt_length=padding.PSS.AUTO)
_PSS_SIGN = padding.PSS(mgf=padding.MGF1(PSS_HASH()), salt_length=PSS_SALT_BYTES)


def sign(key: PrivateKeyTypes, data: bytes) -> bytes:
    """The signature of ``data`` that :func:`verify` checks, by an Ed25519 or RSA private key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _PSS_SIGN, PSS_HASH())
    return key.sign(data)


def load_public_key(pem, where: str = "public-key") -> PublicKey:
    """Parse a PEM public key (``BEGIN PUBLIC KEY`` or ``BEGIN RSA PUBLIC KEY``).

    :raises ConfigError: naming ``where``; the key itself is never quoted back.
    """
    expected = f"an Ed25519 or RSA ({MIN_RSA_BITS} bits or more) public key in PEM"
    if not isinstance(pem, str) or not pem.strip() or len(pem) > MAX_KEY_CHARS:
        raise ConfigError(f"{where}: expected {expected}")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: expected {expected}; this is not a PEM public key") from None
    except Exception:  # noqa: BLE001 - cryptography's unsupported-algorithm errors are not ValueErrors
        raise ConfigError(f"{where}: expected {expected}; this key type is not supported") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: expected {expected}; got an RSA key of {key.key_size} bits")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ConfigError(f"{where}: expected {expected}; got a {type(key).__name__.removesuffix('PublicKey')} key")


def key_type(key: PublicKey) -> str:
    """``ed25519`` or ``rsa-<bits>``."""
    return f"rsa-{key.key_size}" if isinstance(key, rsa.RSAPublicKey) else "ed25519"


def fingerprint(key: PublicKey) -> str:
    """``SHA256:<base64>`` of the key's DER SubjectPublicKeyInfo: safe to show and to log."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def verify(key: PublicKey, data: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``key``'s signature of ``data`` (see the module docstring)."""
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _PSS_VERIFY, PSS_HASH())
        else:
            key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
