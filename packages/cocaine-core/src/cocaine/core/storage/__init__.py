"""The storage interface: JSON documents by namespace and key (manifests live in ``apps``)."""

from __future__ import annotations

from typing import Any, ClassVar


class Storage:
    """Base class of every storage. Subclasses set ``name`` (the daemon's ``--storage`` option)."""

    name: ClassVar[str] = ""

    def __init__(self, location: str, instance: str) -> None:
        self.location = location
        self.instance = instance

    def list(self, namespace: str) -> list[str]:
        """Keys in ``namespace``, sorted; empty if the namespace does not exist."""
        raise NotImplementedError

    def get(self, namespace: str, key: str) -> Any:
        """The stored document. :raises StorageError: missing, unreadable or corrupt."""
        raise NotImplementedError

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` so that a reader sees the old or the new document, never a mix."""
        raise NotImplementedError

    def remove(self, namespace: str, key: str) -> None:
        """Remove the document; a missing one is not an error."""
        raise NotImplementedError
