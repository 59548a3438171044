"""Small checks shared by manifest, driver and engine validation; every error names its field."""

from __future__ import annotations

import re

from cocaine.core.errors import ConfigError

_MISSING = object()


def field_error(where: str, expected: str, value=_MISSING) -> ConfigError:
    got = "it is missing" if value is _MISSING else f"got {value!r}"
    return ConfigError(f"{where}: expected {expected}, {got}")


def only_keys(config: dict, known, where: str) -> None:
    """Reject keys outside ``known`` (a typo such as ``pool_limit`` must not pass silently)."""
    for key in config:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")


def get_int(config: dict, key: str, where: str, *, default=_MISSING, minimum: int | None = None,
            maximum: int | None = None) -> int:
    value = config.get(key, default)
    if value is _MISSING:
        raise field_error(f"{where}.{key}", _describe_int(minimum, maximum))
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise field_error(f"{where}.{key}", _describe_int(minimum, maximum), value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise field_error(f"{where}.{key}", _describe_int(minimum, maximum), value)
    return value


def get_number(config: dict, key: str, where: str, *, default=_MISSING, minimum: float = 0.0,
               exclusive: bool = True) -> float:
    value = config.get(key, default)
    expected = f"a number {'>' if exclusive else '>='} {minimum:g}"
    if value is _MISSING:
        raise field_error(f"{where}.{key}", expected)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise field_error(f"{where}.{key}", expected, value)
    if value < minimum or (exclusive and value == minimum):
        raise field_error(f"{where}.{key}", expected, value)
    return float(value)


def get_str(config: dict, key: str, where: str, *, default=_MISSING, choices=None) -> str:
    value = config.get(key, default)
    expected = f"one of {', '.join(map(repr, choices))}" if choices else "a non-empty string"
    if value is _MISSING:
        raise field_error(f"{where}.{key}", expected)
    if not isinstance(value, str) or not value or (choices and value not in choices):
        raise field_error(f"{where}.{key}", expected, value)
    return value


def _describe_int(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    return "an integer"


_TCP = re.compile(r"^(?P<host>\*|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.:%-]+?):(?P<port>\*|\d{1,5})$")


def check_endpoint(value, where: str, *, schemes=("tcp", "ipc", "inproc")) -> str:
    """A ZeroMQ endpoint: ``tcp://host:port`` (host may be ``*``, an address, a name or an interface
    such as ``lo``), ``ipc:///path`` or ``inproc://name``."""
    expected = "a ZeroMQ endpoint such as tcp://127.0.0.1:9100, tcp://lo:9100 or ipc:///path"
    if not isinstance(value, str) or "://" not in value:
        raise field_error(where, expected, value)
    scheme, _, address = value.partition("://")
    if scheme not in schemes:
        raise field_error(where, f"{expected} (scheme one of {', '.join(schemes)})", value)
    if scheme == "tcp":
        match = _TCP.match(address)
        if not match:
            raise field_error(where, expected, value)
        port = match["port"]
        if port != "*" and not 0 < int(port) < 65536:
            raise field_error(where, f"{expected} with a port from 1 to 65535", value)
    elif not address:
        raise field_error(where, expected, value)
    return value
