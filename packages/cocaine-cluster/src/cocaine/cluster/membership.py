"""This node in the cluster: its record under its own lease, with its apps, endpoints and load.

Two parts that never wait for each other: the *figures* thread reads the engines' figures (through
their reactors, with a short deadline; a busy reactor only makes its figures older) and builds the
record; the *keeper*, a coroutine on the etcd thread, renews the lease and writes the latest record,
so no busy engine can cost this node its lease.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from typing import Any

from aetcd.exceptions import ClientError

from cocaine.cluster import records
from cocaine.cluster.etcd import Unavailable, cancelled, describe

log = logging.getLogger(__name__)

PERIOD = 0.8  # seconds between record writes (the contract: at least once a second)
FIGURES_TIMEOUT = 0.5  # seconds an engine's reactor gets to hand over its figures
DEFAULT_TTL = 3


def default_address() -> str:
    """The host's address on the default route (what a UDP socket "connected" outward would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() on UDP sends nothing
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


# scheme:// (none for a TCP driver's host:port, such as http-server's), host, :port
_WILDCARD = re.compile(r"^((?:tcp|udp|ws|pgm|epgm)://)?(\*|0\.0\.0\.0|[A-Za-z][\w.-]*?)(:\d+|:\*)$")


LOOPBACK = ("lo", "localhost")  # binds that only this host reaches


def reachable(endpoint: str, address: str) -> str:
    """``endpoint`` as a client on another host connects to it: a bind to ``*``, ``0.0.0.0`` or an
    interface name becomes this node's advertise address. A bind to the loopback interface stays on
    loopback (``127.0.0.1``, as a bind to that address is published): no other host reaches it, and
    advertising it elsewhere would send clients to a port nothing listens on."""
    match = _WILDCARD.match(endpoint)
    if match is None or _is_host_name(match.group(2)):
        return endpoint
    host = "127.0.0.1" if match.group(2) in LOOPBACK else address
    return f"{match.group(1) or ''}{host}{match.group(3)}"


def _is_host_name(host: str) -> bool:
    # Interface names (lo, eth0, veth-x) have no dot; a host name such as node-a.example.org does.
    return host not in ("*", "0.0.0.0") and "." in host


class Membership:
    def __init__(self, storage, node, options: dict[str, Any]) -> None:
        self.storage = storage
        self.node = node
        self.name = options.get("node-name") or socket.gethostname()
        self.address = options.get("advertise-address") or default_address()
        self.ttl = int(options.get("ttl") or DEFAULT_TTL)
        self.management = [reachable(e, self.address) for e in options.get("management", [])]
        self.key = records.node_key(storage.instance, self.name)
        self.lease_id: int | None = None
        #: The create revision of this node's key: claims compare it, so a node whose lease expired
        #: (killed, frozen, cut off) cannot claim anything even if it wakes up believing it can.
        self.create_revision: int | None = None
        self.record: bytes | None = None
        self.forward: str | None = None  # this node's forwarding endpoint, if it forwards
        self._rates: dict[str, tuple[float, int]] = {}  # app → (when, finished jobs) for rps
        self._last: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._record_ready = threading.Event()
        self.thread = threading.Thread(target=self._figures, name="cluster-figures", daemon=True)
        self._keeper = None

    def start(self) -> None:
        self.record = self.build()
        self.thread.start()
        self._keeper = self.storage.etcd.spawn(self._keep())

    def stop(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.cancel()
        lease = self.lease_id
        if lease is not None:  # leave at once rather than after the TTL
            try:
                self.storage.etcd.call(lambda client: client.revoke_lease(lease), timeout=1.0)
            except Exception:  # noqa: BLE001 - the lease expires by itself anyway
                pass
        self.thread.join(2.0)

    # -- the record ---------------------------------------------------------------------------------
    def _figures(self) -> None:
        while not self._stop.wait(PERIOD):
            try:
                self.record = self.build()
            except Exception:  # noqa: BLE001 - the last record stays; the next round tries again
                log.exception("cluster: cannot build this node's record")

    def build(self) -> bytes:
        apps = {}
        engines = list({**self.node.stopping, **self.node.engines}.items())
        for name in set(self._rates) - {name for name, _ in engines}:  # deleted apps
            self._rates.pop(name, None)
            self._last.pop(name, None)
        for name, engine in engines:
            apps[name] = self._app(name, engine)
        for name in list(self.node.failed):
            apps.setdefault(name, records.AppLoad(state="failed", tasks={}, load={}))
        return records.NodeRecord(name=self.name, address=self.address, management=self.management,
                                  updated=time.time(), apps=apps, forward=self.forward).to_json()

    def _app(self, name: str, engine) -> records.AppLoad:
        tasks = {}
        for task, spec in engine.manifest.tasks.items():
            entry = {"type": spec.config.get("type", "")}
            endpoint = spec.config.get("endpoint")
            if isinstance(endpoint, str):
                entry["endpoint"] = reachable(endpoint, self.address)
            tasks[task] = entry
        try:
            figures = engine.figures(timeout=FIGURES_TIMEOUT)  # the snapshot info and metrics show too
        except Exception:  # noqa: BLE001 - a busy or stopping reactor: keep its last figures
            figures = None
        if figures is None:
            return records.AppLoad(state=engine.state, tasks=tasks, load=self._last.get(name, {}))
        finished = sum(t.succeeded + t.failed_total for t in figures.tasks.values())
        now = time.monotonic()
        then, before = self._rates.get(name, (now, finished))
        rps = (finished - before) / (now - then) if now > then else self._last.get(name, {}).get("rps", 0.0)
        self._rates[name] = (now, finished)
        load = {"queue": figures.queue_depth, "queue-limit": figures.queue_limit, "busy": figures.busy,
                "workers": figures.total, "pool-limit": figures.pool_limit, "rps": round(max(rps, 0.0), 3)}
        self._last[name] = load
        return records.AppLoad(state=figures.state, tasks=tasks, load=load)

    # -- the lease, on the etcd thread ----------------------------------------------------------------
    async def _keep(self) -> None:
        etcd = self.storage.etcd
        while True:
            try:
                if self.lease_id is None:
                    lease = await etcd.run(lambda client: client.lease(self.ttl))
                    self.lease_id, self.create_revision = lease.id, None
                    log.info("cluster: node %s joined with lease %x (TTL %d s)", self.name, lease.id, self.ttl)
                else:
                    reply = await etcd.run(lambda client: client.refresh_lease(self.lease_id))
                    if reply is None or reply.TTL <= 0:
                        log.warning("cluster: lease of node %s expired; joining again", self.name)
                        self.lease_id = self.create_revision = None
                        continue
                record, lease_id = self.record, self.lease_id
                await etcd.run(lambda client, record=record, lease_id=lease_id: client.put(
                    self.key.encode(), record, lease=lease_id))
                if self.create_revision is None:
                    found = await etcd.run(lambda client: client.get(self.key.encode()))
                    if found is not None and found.lease == lease_id:
                        self.create_revision = found.create_revision
            except asyncio.CancelledError:
                if cancelled():
                    raise
                # A call cut short by a connection another failure closed: try again.
            except (Unavailable, ClientError) as e:
                if self.storage.connected:
                    self.storage.lost(describe(e))
            except Exception:  # noqa: BLE001 - keep trying: a node must not drop out over one bug
                log.exception("cluster: keeping node %s's lease failed", self.name)
            await asyncio.sleep(PERIOD)
