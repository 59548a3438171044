"""A load-aware client for an app's ``native-server`` task served by several nodes (docs/cluster-client.md).

It finds the nodes that serve the task (from etcd, :class:`EtcdNodes`, or from a fixed list,
:class:`StaticNodes`), sends each request to one of them with the native protocol
(docs/native-protocol.md, through :mod:`cocaine.drivers.native_client`), and::

    with ClusterClient("echo", "echo", EtcdNodes(["127.0.0.1:2379"])) as client:
        client.call(b"hello")                      # the whole response
        for chunk in client.request(b"x"):         # response chunks as they arrive
            ...

- picks the node by power of two choices: of two nodes drawn at random, the one with the lower
  reported pressure (:attr:`AppLoad.pressure`) plus this client's own requests in flight to it per
  worker slot (fresher than any report);
- resends a request that a node refused before running it (503: queue full, app stopping or
  broken) to another node, never one that may have started;
- holds one deadline per request across resends: each resend carries the time left;
- ends every request with its response or exactly one error, :class:`NodeError` (which node, what
  it answered, the nodes that refused before; :class:`NodeSilent` when it answered nothing) or
  :class:`NoNode`.

One client may be shared by threads: each thread gets its own connections, and the requests in
flight are counted across them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import zmq

from cocaine.cluster import records
from cocaine.core.errors import Code, JobError
from cocaine.drivers.native_protocol import WINDOW
from cocaine.drivers.native_client import Call, Client

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# How long a thread's first request to a node waits for the connection to come up; after that a node
# that is not connected is passed over at once (the request is not sent, so it goes elsewhere).
CONNECT_WAIT = 0.5
# How long past a request's deadline the client still waits for the node's own 504, which says more
# than a silence would.
GRACE = 1.0
# The 503 answers the engine gives only to a request that no worker ever had: refused on arrival
# (queue full, app stopping or broken) or dropped from the queue (app stopped, or broken, before
# it ran). "stopped before the job finished" is also a 503, but that job had started: not resent.
NEVER_RAN = re.compile(r"queue is full|^app '[^']*' is (created|stopping|closing|stopped|broken)\b"
                       r"|stopped before the job ran")


def never_ran(error: JobError) -> bool:
    """Whether ``error`` says the node refused the request before any worker had it."""
    return error.code == Code.UNAVAILABLE and bool(NEVER_RAN.search(error.message))


# -- errors ----------------------------------------------------------------------------------------
class ClusterError(JobError):
    """A request failed; ``refusals`` lists (node, code, message) of the nodes that refused it first."""

    def __init__(self, code: int, message: str, refusals: list[tuple[str, int, str]]) -> None:
        if refusals:
            message += "; refused before by " + ", ".join(f"{n} ({c} {m})" for n, c, m in refusals)
        super().__init__(code, message)
        self.refusals = refusals


class NoNode(ClusterError):
    """No node (or no node not tried already) serves the app's task: 503."""


class NodeError(ClusterError):
    """The node that had the request answered an error, or nothing in time (504); ``node`` names it."""

    def __init__(self, node: str, code: int, message: str, refusals: list[tuple[str, int, str]]) -> None:
        super().__init__(code, f"node {node}: {message}", refusals)
        self.node = node


class NodeSilent(NodeError):
    """The node that had the request sent no answer, not even its own 504, by the deadline (and some
    grace): it is gone, stuck or unreachable. The request may have run."""


# -- where the nodes are -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A node serving the task: where to reach it, and its load as it last reported it."""

    node: str
    endpoint: str
    pressure: float = 0.0  # AppLoad.pressure; 0 when the node reports no load
    slots: float = 1.0  # the app's worker slots on the node (pool-limit), to weigh requests in flight


class StaticNodes:
    """A fixed set of nodes: ``{"node-a": "tcp://10.0.0.2:9100", ...}`` or a list of endpoints
    (each its own node). They report no load: only the client's requests in flight weigh, per
    worker slot when ``slots`` gives a node's (its app's ``pool-limit`` × ``concurrency``, say)."""

    def __init__(self, nodes: Mapping[str, str] | Iterable[str], slots: Mapping[str, float] | None = None) -> None:
        pairs = nodes.items() if isinstance(nodes, Mapping) else ((e, e) for e in nodes)
        slots = slots or {}
        self._targets = {name: Target(name, endpoint, slots=max(float(slots.get(name, 1)), 1.0))
                         for name, endpoint in pairs}
        if not self._targets:
            raise ValueError("StaticNodes needs at least one node")

    def serving(self, app: str, task: str) -> dict[str, Target]:
        return dict(self._targets)

    def close(self) -> None:
        pass


class EtcdNodes:
    """The nodes of a cluster, from their records in etcd (docs/cluster.md), kept current by a watch
    on ``/cocaine/<instance>/nodes/`` on a thread of its own: a node whose record goes (its lease
    expired) is dropped at once. While etcd is unreachable the last view stays, and the thread
    reconnects, trying the endpoints in turn.

    :param endpoints: etcd's client endpoints, ``host:port`` (or ``http://host:port``).
    :param ready_timeout: seconds to wait for the first listing before giving up with ConnectionError.
    """

    def __init__(self, endpoints: Iterable[str], instance: str = "default", *, ready_timeout: float = 10.0) -> None:
        self.endpoints = [_host_port(e) for e in endpoints]
        if not self.endpoints:
            raise ValueError("EtcdNodes needs at least one etcd endpoint")
        self.prefix = records.nodes_prefix(instance).encode()
        self._records: dict[str, records.NodeRecord] = {}
        self._lock = threading.Lock()
        self._listed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()  # set on the loop's thread only
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="cocaine-cluster-nodes", daemon=True)
        self._thread.start()
        if not self._listed.wait(ready_timeout):
            self.close()
            raise ConnectionError(f"no node list from etcd at {', '.join(map(_join, self.endpoints))} "
                                  f"within {ready_timeout:g} s: {self.last_error or 'no answer'}")

    def records(self) -> dict[str, records.NodeRecord]:
        with self._lock:
            return dict(self._records)

    def serving(self, app: str, task: str) -> dict[str, Target]:
        found = {}
        for name, record in self.records().items():
            endpoint = record.endpoint(app, task)
            if endpoint:
                load = record.apps[app]
                slots = max(load.load.get("pool-limit", 0), load.load.get("workers", 0), 1)
                found[name] = Target(name, endpoint, load.pressure, slots)
        return found

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    # -- the watch thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._follow())
        finally:
            self._loop.close()

    async def _follow(self) -> None:
        import aetcd  # here: importing grpc is for clients that use etcd

        stopping = asyncio.ensure_future(self._stop.wait())
        for host, port in itertools.cycle(self.endpoints):
            watching = asyncio.ensure_future(self._list_and_watch(aetcd, host, port))
            await asyncio.wait([stopping, watching], return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
                return
            error = watching.exception()
            self.last_error = f"{host}:{port}: {type(error).__name__}: {error}" if error else "watch ended"
            log.warning("cluster nodes: etcd %s; reconnecting", self.last_error)
            try:  # a pause before the next endpoint, unless told to stop
                await asyncio.wait_for(asyncio.shield(stopping), 0.5)
                return
            except TimeoutError:
                pass

    async def _list_and_watch(self, aetcd, host: str, port: int) -> None:
        async with aetcd.Client(host=host, port=port, timeout=5) as etcd:
            listing = await etcd.get_prefix(self.prefix)
            current = {}
            for kv in listing:
                self._apply(current, kv.key, kv.value)
            with self._lock:
                self._records = current
            self._listed.set()
            # From the revision after the listing: no change between the two is missed.
            watch = await etcd.watch_prefix(self.prefix, start_revision=listing.header.revision + 1)
            async for event in watch:
                with self._lock:
                    if event.kind == "DELETE":
                        self._records.pop(_node_name(self.prefix, event.kv.key), None)
                    else:
                        self._apply(self._records, event.kv.key, event.kv.value)

    def _apply(self, into: dict, key: bytes, value: bytes) -> None:
        name = _node_name(self.prefix, key)
        try:
            into[name] = records.parse(value, where=key.decode(errors="replace"))
        except records.RecordError as e:  # the node is left out rather than guessed at
            into.pop(name, None)
            log.warning("cluster nodes: %s", e)


def _node_name(prefix: bytes, key: bytes) -> str:
    return key[len(prefix):].decode(errors="replace")


def _host_port(endpoint: str) -> tuple[str, int]:
    address = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r}: expected host:port")
    return host.strip("[]"), int(port)


def _join(host_port: tuple[str, int]) -> str:
    return f"{host_port[0]}:{host_port[1]}"


def nodes_from(spec: str, instance: str = "default", *, ready_timeout: float = 10.0) -> EtcdNodes | StaticNodes:
    """The nodes a command line names: ``etcd://HOST:PORT[,HOST:PORT...]`` (a cluster's etcd, as
    ``cocained --cluster`` takes it) or a static list ``[NAME=]ENDPOINT[,...]`` of the task's endpoints.

    :raises ValueError: naming the part of ``spec`` at fault.
    """
    if spec.startswith("etcd://"):
        return EtcdNodes(spec[len("etcd://"):].split(","), instance, ready_timeout=ready_timeout)
    nodes = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, endpoint = item.rpartition("=")
        if "://" not in endpoint:
            raise ValueError(f"{item!r}: expected [NAME=]ENDPOINT (tcp://HOST:PORT) or etcd://HOST:PORT")
        nodes[name or endpoint] = endpoint
    if not nodes:
        raise ValueError("expected etcd://HOST:PORT[,...] or [NAME=]ENDPOINT[,...], got nothing")
    return StaticNodes(nodes)


# -- choosing a node ---------------------------------------------------------------------------------
Chooser = Callable[[list[Target], Callable[[Target], float]], Target]


def power_of_two_choices(targets: list[Target], score: Callable[[Target], float]) -> Target:
    """The less loaded of two distinct nodes drawn at random (ties: either)."""
    if len(targets) == 1:
        return targets[0]
    a, b = random.sample(targets, 2)
    return a if score(a) <= score(b) else b


class RoundRobin:
    """Each node in turn, blind to load: the reference power of two choices is measured against."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def __call__(self, targets: list[Target], score) -> Target:
        ordered = sorted(targets, key=lambda t: t.node)
        return ordered[next(self._turn) % len(ordered)]


# -- the client --------------------------------------------------------------------------------------
class ClusterClient:
    """Requests to ``app``'s native-server ``task`` on the nodes that ``nodes`` finds.

    :param nodes: :class:`EtcdNodes`, :class:`StaticNodes`, or anything with ``serving(app, task)``
        returning ``{node: Target}``.
    :param timeout: default seconds a request has, from when it is sent until its last chunk, across
        resends; the node fails it with 504 when it runs out (each resend carries the time left).
    :param choose: the balancing policy (default :func:`power_of_two_choices`).
    """

    def __init__(self, app: str, task: str, nodes, *, timeout: float = DEFAULT_TIMEOUT,
                 context: zmq.Context | None = None, curve: tuple[bytes, bytes, bytes] | None = None,
                 choose: Chooser = power_of_two_choices) -> None:
        self.app, self.task, self.nodes = app, task, nodes
        self.timeout = timeout
        self.choose = choose
        self._context = context or zmq.Context.instance()
        self._curve = curve
        self._local = threading.local()  # this thread's connections: endpoint -> Client
        self._connections: list[Client] = []
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def call(self, body: bytes = b"", **options) -> bytes:
        """Send a whole request and return the whole response."""
        return self.request(body, **options).read()

    def request(self, body: bytes = b"", *, stream: bool = False, urgent: bool = False,
                timeout: float | None = None) -> ClusterCall:
        """Send a request to a node and return its :class:`ClusterCall` (see Client.request)."""
        timeout = self.timeout if timeout is None else timeout
        if stream and len(body) > WINDOW:  # the rest waits for credit: it goes as writes
            call = ClusterCall(self, body[:WINDOW], stream, urgent, timeout)
            call.write(body[WINDOW:])
            return call
        return ClusterCall(self, body, stream, urgent, timeout)

    def in_flight(self) -> dict[str, int]:
        """This client's requests in flight, per node."""
        with self._lock:
            return {node: n for node, n in self._in_flight.items() if n}

    def close(self) -> None:
        """Close every connection (call once the threads using the client are done)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------
    def _pick(self, refused: Iterable[str]) -> Target | None:
        skip = set(refused)
        targets = [t for name, t in self.nodes.serving(self.app, self.task).items() if name not in skip]
        if not targets:
            return None
        with self._lock:
            in_flight = dict(self._in_flight)
        return self.choose(targets, lambda t: t.pressure + in_flight.get(t.node, 0) / t.slots)

    def _connection(self, endpoint: str) -> Client:
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get(endpoint)
        if connection is None:
            connection = connections[endpoint] = Client(endpoint, context=self._context, curve=self._curve,
                                                        immediate=True)
            with self._lock:
                self._connections.append(connection)
        return connection

    def _reachable(self, endpoint: str, connection: Client, left: float) -> bool:
        if connection.connected():
            return True
        waited = self._local.__dict__.setdefault("waited", set())
        if endpoint in waited:
            return False
        waited.add(endpoint)
        return connection.connected(min(CONNECT_WAIT, left))

    def _count(self, node: str, delta: int) -> None:
        with self._lock:
            self._in_flight[node] = self._in_flight.get(node, 0) + delta


class ClusterCall:
    """One request on the cluster: write its chunks (streamed requests), then read its response.

    ``node`` is the node that has it now. Until the node shows that a handler has the request (a
    response chunk, or credit for more request chunks), the request's chunks are kept, so that a
    refusal can be resent whole (no node grants credit beyond the first 256 KiB before a handler
    reads them, so that is what is kept, unless one ``write()`` was larger).
    """

    def __init__(self, client: ClusterClient, body: bytes, stream: bool, urgent: bool, timeout: float) -> None:
        self.client = client
        self.urgent = urgent
        self.stream = stream
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.refusals: list[tuple[str, int, str]] = []
        self.sent = [body]  # what a resend must send again, until the request has started
        self.ended = not stream
        self.node: str | None = None
        self.target: Target | None = None
        self.call: Call | None = None
        self.done = False
        self._send()

    # -- the request ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.stream or self.ended:
            raise RuntimeError("write() after end(), or on a request that does not stream")
        if self.sent is not None:
            self.sent.append(data)
        self._guard(lambda: self.call.write(data))

    def end(self) -> None:
        if self.stream and not self.ended:
            self.ended = True
            self._guard(self.call.end)

    def cancel(self) -> None:
        if not self.done:
            self.call.cancel()
            self._settle()

    # -- the response ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[bytes]:
        while True:
            call = self.call
            try:
                while True:
                    if call.chunks:
                        yield call.chunks.popleft()
                    elif call.finished:
                        break
                    else:
                        self._wait()
                if call.error is not None:
                    raise call.error
                self._settle()
                return
            except ClusterError:
                raise
            except JobError as e:
                self._failed(e)  # raises unless the request went to another node

    def read(self) -> bytes:
        return b"".join(self)

    # -- internals ------------------------------------------------------------------------------------
    def _send(self) -> None:
        """Send the request (again) to a node not tried yet."""
        client = self.client
        target = client._pick(name for name, _, _ in self.refusals)
        if target is None:
            self.done = True
            what = "no running node serves" if not self.refusals else "no other node serves"
            raise NoNode(Code.UNAVAILABLE, f"{what} {client.app} {client.task}", self.refusals)
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.done = True
            raise ClusterError(Code.TIMEOUT, f"deadline ({self.timeout:g} s) passed before a node took the "
                                             f"request", self.refusals)
        self.target, self.node = target, target.node
        connection = client._connection(target.endpoint)
        first, *rest = self.sent
        try:
            if not client._reachable(target.endpoint, connection, left):
                raise ConnectionError(f"not connected to {target.endpoint}")
            self.call = connection.request(first, stream=self.stream, urgent=self.urgent, timeout=left)
        except ConnectionError as e:  # not sent: the node never saw it
            self.refusals.append((target.node, Code.UNAVAILABLE, f"{e} (not sent)"))
            self._send()
            return
        client._count(target.node, +1)
        for piece in rest:
            self._guard(lambda piece=piece: self.call.write(piece))
        if self.stream and self.ended:
            self._guard(self.call.end)

    def _wait(self) -> None:
        """Wait for the node's next message; the node's own 504 should come first, silence past the
        deadline (and some grace) means the node is gone or stuck: the request may have run."""
        try:
            self.call.client.wait(self.deadline + GRACE)
        except TimeoutError:
            self._silent()

    def _silent(self) -> None:
        self.call.cancel()
        self._settle()
        raise NodeSilent(self.node, Code.TIMEOUT,
                         f"no answer within the request's {self.timeout:g} s ({self.target.endpoint}); "
                         f"the request may have run", self.refusals) from None

    def _guard(self, action) -> None:
        """Run a write or end (which may wait for credit until the deadline): a refusal that arrives
        meanwhile resends the request; credit means a handler reads it, so it is never resent."""
        connection = self.call.client
        connection.timeout = max(self.deadline + GRACE - time.monotonic(), 0.001)  # this thread's own
        try:
            action()
        except JobError as e:
            self._failed(e)
        except TimeoutError:
            self._silent()
        except ConnectionError as e:  # the first part went: it may have been taken
            self.call.cancel()
            self._settle()
            raise NodeError(self.node, Code.UNAVAILABLE, f"{e} while sending the request; it may have run",
                            self.refusals) from None
        if self.call.started:
            self.sent = None

    def _failed(self, error: JobError) -> None:
        """The node answered an error: resend the request if it never ran there, else raise it."""
        self._settle()
        if self.sent is not None and not self.call.started and never_ran(error):
            self.refusals.append((self.node, error.code, error.message))
            self.done = False
            self._send()
            return
        raise NodeError(self.node, error.code, error.message, self.refusals) from None

    def _settle(self) -> None:
        if not self.done:
            self.done = True
            self.client._count(self.node, -1)

    def __del__(self) -> None:
        # A call dropped unread no longer counts as in flight.
        if not getattr(self, "done", True) and getattr(self, "node", None):
            self.client._count(self.node, -1)
