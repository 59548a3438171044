"""The storage interface: JSON documents by namespace and key (manifests live in ``apps``)."""

from __future__ import annotations

from typing import Any, ClassVar


class Storage:
    """Base class of every storage. Subclasses set ``name`` (the daemon's ``--storage`` option).

    A *shared* storage (``shared = True``, such as cocaine-cluster's ``etcd``) is seen by every node
    of a cluster: it tells the node about changes other nodes made (:meth:`attach`), creates
    atomically (:meth:`create`) and passes a reload on (:meth:`announce`).
    """

    name: ClassVar[str] = ""
    shared: ClassVar[bool] = False

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

    def create(self, namespace: str, key: str, value: Any) -> None:
        """Store a new document. A shared storage refuses (StorageError) when the key already exists,
        so that two nodes creating the same app at once cannot both win; a local one overwrites."""
        self.put(namespace, key, value)

    def announce(self, namespace: str, key: str) -> None:
        """Tell the other nodes sharing this storage to re-read the document (a reload); a local
        storage has nobody to tell. :raises StorageError: the other nodes could not be told."""

    def attach(self, node: Any, options: dict[str, Any]) -> None:
        """Called once the node exists, before it loads its apps: a shared storage starts following
        other nodes' changes here. ``node`` is the daemon's :class:`~cocaine.core.daemon.node.Node`
        (not imported here: the node depends on storages, not the other way); ``options`` carries
        the daemon's cluster options."""

    def cluster(self) -> dict[str, Any] | None:
        """What ``info`` shows under ``cluster``: the nodes a shared storage knows, their load and
        apps, and whether this node's view is stale; None for a local storage."""
        return None

    def close(self) -> None:
        """Release connections and threads; the daemon is stopping."""
