"""Manifests that follow the cluster: every change another node makes is applied on this one.

The storage's watch tells which keys changed; a thread of its own (starting an app may take seconds,
which neither the etcd thread nor the management thread may spend) makes each changed app match the
view. A change this node made itself, and applied while answering the request, is not applied twice.
"""

from __future__ import annotations

import logging
import queue
import threading

from cocaine.cluster import records
from cocaine.core.daemon.node import APPS

log = logging.getLogger(__name__)


class Sync:
    def __init__(self, storage, node) -> None:
        self.storage = storage
        self.node = node
        self.prefix = records.storage_key(storage.instance, APPS)
        self.applied: dict[str, int | None] = {}  # app → the revision this node runs (None: deleted)
        self.lock = threading.Lock()
        self.pending: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="cluster-sync", daemon=True)
        storage.listeners.append(self._changed)

    def start(self) -> None:
        # What the node loaded at start counts as applied.
        with self.storage.view_lock:
            for key, (revision, _) in self.storage.view.items():
                if key.startswith(self.prefix):
                    self.applied[key[len(self.prefix):]] = revision
        self.thread.start()
        for name in self.node.storage.list(APPS):  # anything that changed between loading and now
            self.pending.put(name)

    def stop(self) -> None:
        self.pending.put(None)
        self.thread.join(5.0)

    def applied_locally(self, key: str, revision: int | None) -> None:
        if key.startswith(self.prefix):
            with self.lock:
                self.applied[key[len(self.prefix):]] = revision

    def _changed(self, key: str, full: bool) -> None:
        if key.startswith(self.prefix):
            self.pending.put(key[len(self.prefix):])

    def _run(self) -> None:
        while True:
            name = self.pending.get()
            if name is None:
                return
            try:
                self._apply(name)
            except Exception:  # noqa: BLE001 - one app's failure must not stop the others following
                log.exception("cluster: app %s: cannot apply the cluster's change", name)

    def _apply(self, name: str) -> None:
        with self.node.lock:  # management requests wait, so they never see half an app
            with self.storage.view_lock:
                found = self.storage.view.get(self.prefix + name)
            revision = found[0] if found is not None else None
            with self.lock:
                if self.applied.get(name, None) == revision and (revision is not None or name not in self.node.engines):
                    return
                self.applied[name] = revision
            log.info("cluster: app %s changed in the cluster (revision %s): applying", name, revision)
            self.node.apply_stored(name)
