"""Management users: one document per user in the storage namespace ``keys`` (docs/security.md).

``keys/<name>`` holds ``{"public-key": "<PEM>", "permissions": ["info", ...]}``. ``permissions``
lists the actions the user may call, ``["*"]`` for every action (the default when it is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cocaine.core.errors import CocaineError, ConfigError, StorageError
from cocaine.core.management import ACTIONS
from cocaine.core.management.signing import PublicKey, fingerprint, key_type, load_public_key
from cocaine.core.storage import Storage
from cocaine.core.storage.files import check_key

KEYS = "keys"  # the storage namespace of users
ALL = "*"
DOCUMENT_KEYS = ("public-key", "permissions")


class UnknownUser(CocaineError, LookupError):
    """No user of that name in storage."""


@dataclass(frozen=True)
class User:
    name: str
    key: PublicKey
    permissions: tuple[str, ...]

    def may(self, action: str) -> bool:
        return ALL in self.permissions or action in self.permissions

    def summary(self) -> dict[str, Any]:
        """What ``user-list`` shows: never the key itself."""
        return {"key-type": key_type(self.key), "fingerprint": fingerprint(self.key),
                "permissions": list(self.permissions)}


def check_user_name(name) -> str:
    try:
        return check_key(name)
    except StorageError as e:
        raise ConfigError(f"user name: {e}") from None


def check_permissions(value, where: str) -> tuple[str, ...]:
    expected = f'a non-empty list of actions ({", ".join(ACTIONS)}) or ["*"]'
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    for permission in value:
        if permission != ALL and permission not in ACTIONS:
            raise ConfigError(f"{where}: unknown action {permission!r} (expected {expected})")
    return tuple(dict.fromkeys(value))


def parse_user(name: str, document: Any) -> User:
    """Validate a user document; errors name the user and the field."""
    where = f"user {name!r}"
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: expected an object {{\"public-key\": PEM, \"permissions\": [...]}}")
    for field in document:
        if field not in DOCUMENT_KEYS:
            raise ConfigError(f"{where}: {field}: unknown key (known: {', '.join(DOCUMENT_KEYS)})")
    key = load_public_key(document.get("public-key"), f"{where}: public-key")
    permissions = check_permissions(document.get("permissions", [ALL]), f"{where}: permissions")
    return User(name, key, permissions)


class Users:
    """The users in a storage's ``keys`` namespace. Read on every request, so a key removed from
    storage (by another node sharing it, or by hand) stops working at once."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def get(self, name: str) -> User:
        """:raises UnknownUser: no such user. :raises CocaineError: the document is unreadable or invalid."""
        try:
            document = self.storage.get(KEYS, name)
        except StorageError:
            if name not in self.names():
                raise UnknownUser(name) from None
            raise
        return parse_user(name, document)

    def names(self) -> list[str]:
        return self.storage.list(KEYS)

    def add(self, name: str, document: Any, *, replace: bool = False) -> User:
        check_user_name(name)
        user = parse_user(name, document)
        if not replace and name in self.names():
            raise ConfigError(f"user {name!r} already exists; remove it first")
        self.storage.put(KEYS, name, {"public-key": document["public-key"], "permissions": list(user.permissions)})
        return user

    def remove(self, name: str) -> None:
        check_user_name(name)
        if name not in self.names():
            raise ConfigError(f"no user named {name!r}")
        self.storage.remove(KEYS, name)
