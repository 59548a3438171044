"""The ``etcd`` storage: documents every node of a cluster shares, and the node's view of them.

Writes go to etcd and fail with "cluster storage unavailable: ..." when it cannot be reached, so a
write either reaches every node or none. Reads come from the node's *view*: a copy of the
instance's keys kept current by a watch from the last revision seen (a full re-read when that
revision was compacted or the connection was lost), so a node keeps serving, and answering reads,
while etcd is away; ``info`` then marks the view stale.

``--cluster etcd://HOST:PORT[,...]`` selects this storage; ``attach`` then joins the node to the
cluster: membership (:mod:`cocaine.cluster.membership`), manifests that follow every change
(:mod:`cocaine.cluster.sync`) and timers that fire once per cluster (:mod:`cocaine.cluster.ticks`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aetcd.exceptions import ClientError, RevisionCompactedError

from cocaine.cluster import records
from cocaine.cluster.etcd import EtcdThread, Unavailable, cancelled, describe, parse_url
from cocaine.core.errors import StorageError
from cocaine.core.storage import Storage
from cocaine.core.storage.files import check_key

log = logging.getLogger(__name__)

RETRY = 0.5  # seconds between attempts to reach etcd again
FIRST_SYNC = 5.0  # seconds at most a starting node waits for its first view before starting without one


def encode(value: Any) -> bytes:
    """Exactly the bytes the files storage writes, so a manifest reads the same from either."""
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def _revision(responses) -> int | None:
    """The mod revision of the key a transaction put and then read (its last operation)."""
    try:
        return responses[-1][0][1].mod_revision
    except (IndexError, TypeError):
        return None


class EtcdStorage(Storage):
    name = "etcd"
    shared = True

    def __init__(self, location: str, instance: str) -> None:
        super().__init__(location, instance)
        try:
            endpoints = parse_url(location)
        except ValueError as e:
            raise StorageError(f"--cluster: {e}") from None
        self.etcd = EtcdThread(endpoints)
        self.prefix = records.instance_prefix(instance)
        self.view_lock = threading.Lock()
        self.view: dict[str, tuple[int, bytes]] = {}  # key → (mod revision, value), under the prefix
        self.revision = 0  # the etcd revision the view reflects
        self.connected = False
        self.problem: str | None = "not connected yet"
        self.since = time.time()  # of the last change of ``connected``
        self.listeners: list[Callable[[str, bool], None]] = []  # (key, full resync?) on every change
        self._first_attempt = threading.Event()  # the first read of etcd succeeded or failed
        self._watching: asyncio.Task | None = None
        self.cluster_node = None  # the membership, once attached
        self.sync = None
        self.forwarder = None
        self.etcd.start()
        self._watching = self.etcd.spawn(self._follow())
        if not self._first_attempt.wait(FIRST_SYNC) or not self.connected:
            log.warning("cluster storage unavailable: starting with no apps until etcd answers (%s)", self.problem)

    # -- the Storage interface --------------------------------------------------------------------
    def _key(self, namespace: str, key: str = "") -> str:
        check_key(namespace)
        if key:
            check_key(key)
        return records.storage_key(self.instance, namespace, key)

    def list(self, namespace: str) -> list[str]:
        prefix = self._key(namespace)
        with self.view_lock:
            return sorted(k[len(prefix):] for k in self.view if k.startswith(prefix))

    def get(self, namespace: str, key: str) -> Any:
        with self.view_lock:
            found = self.view.get(self._key(namespace, key))
        if found is None:
            raise StorageError(f"{namespace}/{key} does not exist in the cluster storage")
        try:
            return json.loads(found[1])
        except ValueError as e:
            raise StorageError(f"{namespace}/{key} in the cluster storage is not valid JSON: {e}") from None

    def put(self, namespace: str, key: str, value: Any) -> None:
        etcd_key, data = self._key(namespace, key), encode(value)
        response = self._write(lambda client: client.put(etcd_key.encode(), data))
        self._seen(etcd_key, response.header.revision, data)

    def create(self, namespace: str, key: str, value: Any) -> None:
        etcd_key, data = self._key(namespace, key), encode(value)

        async def create(client):
            tx = client.transactions
            return await client.transaction(compare=[tx.version(etcd_key.encode()) == 0],
                                             success=[tx.put(etcd_key.encode(), data), tx.get(etcd_key.encode())],
                                             failure=[])

        succeeded, responses = self._write(create)
        if not succeeded:
            raise StorageError(f"{namespace}/{key} already exists in the cluster (another node created it)")
        self._seen(etcd_key, _revision(responses), data)

    def announce(self, namespace: str, key: str) -> None:
        """Write the document again, unchanged: every node sees a new revision and re-reads it.
        Only if nobody changed it meanwhile (a newer manifest reaches everyone by itself)."""
        etcd_key = self._key(namespace, key)
        with self.view_lock:
            found = self.view.get(etcd_key)
        if found is None:
            raise StorageError(f"{namespace}/{key} does not exist in the cluster storage")
        revision, data = found

        async def touch(client):
            tx = client.transactions
            return await client.transaction(compare=[tx.mod(etcd_key.encode()) == revision],
                                            success=[tx.put(etcd_key.encode(), data), tx.get(etcd_key.encode())],
                                            failure=[])

        succeeded, responses = self._write(touch)
        if succeeded:
            self._seen(etcd_key, _revision(responses), data)

    def remove(self, namespace: str, key: str) -> None:
        etcd_key = self._key(namespace, key)
        response = self._write(lambda client: client.delete(etcd_key.encode()))
        revision = response.header.revision if response is not None else None
        self._seen(etcd_key, revision, None)

    def _write(self, operation):
        try:
            return self.etcd.call(operation)
        except Unavailable as e:
            raise StorageError(f"cluster storage unavailable: {e}") from None
        except ClientError as e:
            raise StorageError(f"cluster storage unavailable: {describe(e)}") from None

    def _seen(self, key: str, revision: int | None, data: bytes | None) -> None:
        """This node's own write: into the view at once (its watch event follows), and applied."""
        with self.view_lock:
            if data is None:
                self.view.pop(key, None)
            elif revision is not None:
                current = self.view.get(key)
                if current is None or current[0] < revision:
                    self.view[key] = (revision, data)
        if self.sync is not None and revision is not None:
            self.sync.applied_locally(key, revision if data is not None else None)

    # -- following etcd, on the etcd thread -------------------------------------------------------
    async def _follow(self) -> None:
        """Keep the view current for ever: a full read, then a watch from the next revision;
        after an error, reconnect and watch on (or read everything again if that is too old)."""
        resync = True
        while True:
            try:
                if resync:
                    await self._read_all()
                    resync = False
                await self._watch()
            except asyncio.CancelledError:
                if cancelled():
                    raise
                self._disconnected("the connection was reset")  # by another call's failure
                resync = self.revision == 0
                await asyncio.sleep(RETRY)
            except RevisionCompactedError as e:
                log.info("cluster storage: revision %d compacted; reading everything again", self.revision)
                self._disconnected(describe(e))
                resync = True
            except Exception as e:  # noqa: BLE001 - any failure: reconnect and go on
                self._disconnected(describe(e))
                if not isinstance(e, Unavailable):  # that one has reset the connection already
                    await self.etcd.reset()
                resync = self.revision == 0
                await asyncio.sleep(RETRY)
            finally:
                self._first_attempt.set()

    async def _read_all(self) -> None:
        result = await self.etcd.run(lambda client: client.get_prefix(self.prefix.encode()))
        view = {kv.key.decode(): (kv.mod_revision, kv.value) for kv in result
                if not kv.key.decode().startswith(self.prefix + "timers/")}
        with self.view_lock:
            changed = {k for k in set(view) | set(self.view) if view.get(k) != self.view.get(k)}
            self.view = view
            self.revision = result.header.revision
        self._connected()
        self._notify(changed, full=True)

    async def _watch(self) -> None:
        client = await self.etcd.connected()
        watch = await client.watch_prefix(self.prefix.encode(), start_revision=self.revision + 1,
                                          progress_notify=True)
        self._connected()
        async for event in watch:
            key = event.kv.key.decode()
            revision = event.kv.mod_revision
            if key.startswith(self.prefix + "timers/"):
                continue
            with self.view_lock:
                if event.kind == "PUT":
                    current = self.view.get(key)
                    if current is None or current[0] < revision:
                        self.view[key] = (revision, event.kv.value)
                else:
                    self.view.pop(key, None)
                self.revision = max(self.revision, revision)
            self._notify({key}, full=False)

    def _connected(self) -> None:
        if not self.connected:
            self.connected, self.problem, self.since = True, None, time.time()
            self._first_attempt.set()
            log.info("cluster storage: following etcd at %s from revision %d", self.etcd.endpoint, self.revision)

    def _disconnected(self, problem: str) -> None:
        if self.connected:
            self.connected, self.since = False, time.time()
            log.warning("cluster storage unavailable: %s; serving from this node's view", problem)
        self.problem = problem

    def lost(self, problem: str) -> None:
        """Another part (the lease keeper) found etcd gone: restart the watch, which may not notice."""
        self._disconnected(problem)
        self.etcd.loop.call_soon_threadsafe(self._restart_watch)

    def _restart_watch(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        self._watching = self.etcd.spawn(self._follow())

    def _notify(self, keys, *, full: bool) -> None:
        for key in keys:
            for listener in self.listeners:
                listener(key, full)

    def nodes(self) -> dict[str, tuple[int, bytes]]:
        """The node records in the view, by node name."""
        prefix = records.nodes_prefix(self.instance)
        with self.view_lock:
            return {k[len(prefix):]: v for k, v in self.view.items() if k.startswith(prefix)}

    # -- the node -----------------------------------------------------------------------------------
    def attach(self, node, options: dict[str, Any]) -> None:
        from cocaine.cluster.forward import Forwarder
        from cocaine.cluster.membership import Membership
        from cocaine.cluster.sync import Sync
        from cocaine.cluster.ticks import TickClaims

        self.cluster_node = Membership(self, node, options)
        self.sync = Sync(self, node)
        node.tick_claims = TickClaims(self, self.cluster_node)
        if node.security.curve is None:
            self.forwarder = node.forwarder = Forwarder(self, self.cluster_node, node)
            self.cluster_node.forward = self.forwarder.endpoint
            self.forwarder.start()
        else:  # a peer's DEALER has no client key to offer a CURVE endpoint (docs/cluster.md, limits)
            log.warning("cluster: CURVE is on: engine.overflow \"forward\" answers 503 instead of forwarding")
        self.cluster_node.start()
        self.sync.start()

    def cluster(self) -> dict[str, Any] | None:
        from cocaine.cluster.view import cluster_view

        return cluster_view(self)

    def close(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        if self.cluster_node is not None:
            self.cluster_node.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
        self.etcd.stop()
