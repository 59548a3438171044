"""The storage interface: JSON documents by namespace and key (manifests live in ``apps``)."""

from __future__ import annotations

from typing import Any, ClassVar


class Storage:
    """Base class of every storage. Subclasses set ``name`` (the daemon's ``--storage`` option)."""

    name: ClassVar[str] = ""

    def __init__(self, location: str, instance: str) -> None:
        self.location = location
        self.instance = instance

    def lock(self) -> None:
        """Claim the instance for this process, the only one that may write it, until :meth:`unlock`
        or the process's death. Called by the daemon before it reads or writes anything.

        The base class claims nothing: keep it for a store that several daemons share on purpose.

        :raises InstanceLocked: another live process holds the instance.
        """

    def unlock(self) -> None:
        """Give the instance up (the daemon's last step)."""

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
