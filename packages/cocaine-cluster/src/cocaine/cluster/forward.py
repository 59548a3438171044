"""Server-side forwarding (``engine.overflow: "forward"``): a request this node cannot take (queue
full, app stopping or broken) runs on the least loaded peer that runs the app, and its answer comes
back through this node, so the client cannot tell but by latency.

Every node binds one ROUTER (its record's ``forward`` endpoint) and keeps a DEALER per peer, all on
one thread of their own. A request goes as ``[id, header, body]`` (the header: app, task, the job's
metadata, its remaining deadline, whether it streams, the forwarding node); a streamed request's
further chunks follow as ``[id, "chunk", data]`` and its end as ``[id, "end", ""]``, and a request
its client gave up on as ``[id, "cancel", {"code", "message"}]``. The answer comes back as at most
one ``[id, "meta", msgpack map]`` (the handler's response metadata: an HTTP status and headers),
``[id, "chunk", data]`` frames, ``[id, "credit", bytes]`` as the handler reads a streamed request
(the origin's driver reads its client under that flow control, as for a local job), and one
``[id, "end", ""]`` or ``[id, "error", {"code", "message"}]``. The metadata travels as msgpack, as
it came from the worker, so bytes stay bytes. A forwarded job carries ``forwarded-by`` in its
metadata and is never forwarded again: one hop at most, so never back.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import threading
import time

import msgpack
import zmq

from cocaine.cluster import records
from cocaine.core.errors import Code

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between checks for peers that left with forwarded jobs
FROM_ORIGIN = (b"chunk", b"end", b"cancel")  # what follows a forwarded request, after its header


class Forwarder:
    def __init__(self, storage, membership, node) -> None:
        self.storage = storage
        self.membership = membership
        self.node = node
        self.context: zmq.Context = node.zmq_context
        self.router = node.security.bind(self.context, zmq.ROUTER, "tcp://*:*")
        port = self.router.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
        self.endpoint = f"tcp://{membership.address}:{port}"
        self.peers: dict[str, zmq.Socket] = {}  # forward endpoint → DEALER
        self.pending: dict[bytes, tuple] = {}  # request id → (engine, job, peer name)
        self.serving: dict[tuple[bytes, bytes], Relay] = {}  # (origin, request id) → a peer's job run here
        self._ids = itertools.count(1)
        self._parsed: dict[str, tuple[int, records.NodeRecord]] = {}
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cluster-forward", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        self.thread.join(3.0)

    # -- the origin: from an engine's reactor -----------------------------------------------------------
    def forward(self, engine, job, why: str) -> bool:
        """Send ``job`` to the least loaded peer running its app and task; False if there is none."""
        peer = self.pick(engine.app, job.task)
        if peer is None:
            return False
        request_id = str(next(self._ids)).encode()
        timeout = None if job.deadline is None else max(0.001, job.deadline - time.monotonic())
        body, handle = job.body or b"", job.handle
        stream = handle is not None and not handle.closed
        if handle is not None:  # from now on its chunks, end and cancel go to the peer
            if handle.pending:
                body, handle.pending = b"".join([body, *handle.pending]), []
            handle.remote = Outgoing(self, peer.forward, request_id)
        header = json.dumps({"app": engine.app, "task": job.task, "meta": job.meta, "timeout": timeout,
                             "stream": stream, "by": self.membership.name}).encode()
        self.pending[request_id] = (engine, job, peer.name)
        self._post(self._send, peer.forward, [request_id, header, body])
        log.debug("app %s: %s: forwarded to %s", engine.app, why, peer.name)
        return True

    def pick(self, app: str, task: str) -> records.NodeRecord | None:
        """The running peer with the lowest pressure for ``app`` (ties: the first by name), counting the
        requests this node has forwarded to it and not seen answered: fresher than any record."""
        in_flight: dict[str, int] = {}
        for _, _, peer in list(self.pending.values()):
            in_flight[peer] = in_flight.get(peer, 0) + 1
        best = None
        for name, (revision, data) in sorted(self.storage.nodes().items()):
            if name == self.membership.name:
                continue
            cached = self._parsed.get(name)
            if cached is None or cached[0] != revision:
                try:
                    cached = self._parsed[name] = (revision, records.parse(data, f"node {name}"))
                except records.RecordError:
                    continue
            record = cached[1]
            entry = record.apps.get(app)
            if record.forward is None or entry is None or entry.state != "running" or task not in entry.tasks:
                continue
            capacity = max(entry.load.get("pool-limit", 0), entry.load.get("workers", 0), 1)
            pressure = entry.pressure + in_flight.get(name, 0) / capacity
            if best is None or pressure < best[0]:
                best = (pressure, record)
        return None if best is None else best[1]

    # -- the peer: from this thread and the engines' reactors -------------------------------------------
    def _serve(self, identity: bytes, request_id: bytes, header: bytes, body: bytes) -> None:
        relay = Relay(self, identity, request_id)
        try:
            request = json.loads(header)
            app, task, meta, timeout = request["app"], request["task"], dict(request["meta"]), request["timeout"]
            stream = bool(request.get("stream"))
            meta["forwarded-by"] = str(request["by"])
        except (ValueError, KeyError, TypeError) as e:
            relay.error(Code.BAD_REQUEST, f"bad forwarded request: {e}")
            return
        engine = self.node.engines.get(app)
        context = engine.contexts.get(task) if engine is not None else None
        if context is None:
            relay.error(Code.UNAVAILABLE, f"app {app!r} task {task!r} does not run on node {self.membership.name}")
            return
        relay.engine = engine
        self.serving[(identity, request_id)] = relay  # until its answer ends (see _answer)

        def open_job() -> None:
            relay.handle = context.open_job(relay, meta, body=body, stream=stream, timeout=timeout,
                                            on_credit=relay.credit if stream else None)

        try:
            engine.reactor.call_soon_threadsafe(open_job)
        except RuntimeError:  # the engine stopped meanwhile
            relay.error(Code.UNAVAILABLE, f"app {app!r} stopped on node {self.membership.name}")

    def _received_part(self, identity: bytes, request_id: bytes, kind: bytes, payload: bytes) -> None:
        """A streamed request's chunk or end, or a cancel, for a job run here (dropped once answered)."""
        relay = self.serving.get((identity, request_id))
        if relay is not None:
            self._on_reactor(relay.engine, relay.apply, kind, payload)

    def reply(self, frames: list[bytes]) -> None:
        self._post(self._answer, frames)

    # -- the thread ------------------------------------------------------------------------------------
    def _post(self, fn, *args) -> None:
        self._outbox.put((fn, args))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # already awake
            pass

    def _send(self, endpoint: str, frames: list[bytes]) -> None:
        sock = self.peers.get(endpoint)
        if sock is None:
            sock = self.peers[endpoint] = self.node.security.secure(self.context.socket(zmq.DEALER), server=False)
            sock.linger = 0
            sock.connect(endpoint)
            self.poller.register(sock, zmq.POLLIN)
        sock.send_multipart(frames)

    def _answer(self, frames: list[bytes]) -> None:
        if frames[2] == b"end" or frames[2] == b"error":
            self.serving.pop((frames[0], frames[1]), None)
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as e:  # the origin is gone: its client gets its answer from the origin's deadline
            log.debug("cannot answer a forwarded request: %s", e.strerror)

    def _run(self) -> None:
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self._wake_r, zmq.POLLIN)
        last_check = time.monotonic()
        try:
            while not self._stop.is_set():
                for sock, _ in self.poller.poll(POLL * 1000):
                    if sock == self._wake_r:
                        os.read(self._wake_r, 4096)
                    elif sock is self.router:
                        self._drain(self.router, self._received_request)
                    else:
                        self._drain(sock, self._received_answer)
                while True:
                    try:
                        fn, args = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    fn(*args)
                if time.monotonic() - last_check > POLL:
                    last_check = time.monotonic()
                    self._fail_departed()
        finally:
            for sock in [self.router, *self.peers.values()]:
                sock.close(0)
            os.close(self._wake_r)
            os.close(self._wake_w)

    @staticmethod
    def _drain(sock: zmq.Socket, handle) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(frames)

    def _received_request(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            return  # not a forwarding node's request
        if frames[2] in FROM_ORIGIN:
            self._received_part(*frames)
        else:
            self._serve(*frames)

    def _received_answer(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            return
        request_id, kind, payload = frames
        if kind == b"chunk" or kind == b"meta" or kind == b"credit":
            found = self.pending.get(request_id)
            if found is None:
                return
            engine, job, _ = found
            if kind == b"chunk":
                self._on_reactor(engine, job.chunk, payload)
                return
            try:
                if kind == b"meta":
                    self._on_reactor(engine, job.reply_meta, msgpack.unpackb(payload))
                elif job.handle is not None:
                    self._on_reactor(engine, job.handle.credited, int(payload))
            except ValueError:
                log.warning("app %s: a peer's %s message was garbled; dropped", engine.app, kind.decode())
            return
        found = self.pending.pop(request_id, None)
        if found is None:
            return
        engine, job, _ = found
        if kind == b"end":
            self._on_reactor(engine, engine.forward_finished, job)
        else:
            code, message = error_of(payload, Code.SERVER, "the peer's answer to a forwarded request was garbled")
            self._on_reactor(engine, engine.forward_finished, job, code, message)

    def _fail_departed(self) -> None:
        """A peer that left the cluster will not answer: its forwarded jobs fail (they may have run,
        so they are not sent again)."""
        present = set(self.storage.nodes())
        for request_id, (engine, job, peer) in list(self.pending.items()):
            if peer not in present and self.pending.pop(request_id, None) is not None:
                self._on_reactor(engine, engine.forward_finished, job, Code.UNAVAILABLE,
                                 f"node {peer} left the cluster before answering the forwarded request")

    @staticmethod
    def _on_reactor(engine, fn, *args) -> None:
        try:
            engine.reactor.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the engine has stopped; it answered its jobs then
            pass


def error_of(payload: bytes, code: int, message: str) -> tuple[int, str]:
    """The ``{"code", "message"}`` of an error or cancel frame; (code, message) if it is garbled."""
    try:
        error = json.loads(payload)
        return int(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return code, message


class Outgoing:
    """A forwarded job's way to its peer, for its handle: a streamed request's further chunks and
    its end, and a cancel (the client gave up). Called on the origin's reactor."""

    __slots__ = ("forwarder", "endpoint", "request_id")

    def __init__(self, forwarder: Forwarder, endpoint: str, request_id: bytes) -> None:
        self.forwarder = forwarder
        self.endpoint = endpoint
        self.request_id = request_id

    def push(self, data: bytes) -> None:
        self.forwarder._post(self.forwarder._send, self.endpoint, [self.request_id, b"chunk", bytes(data)])

    def close(self) -> None:
        self.forwarder._post(self.forwarder._send, self.endpoint, [self.request_id, b"end", b""])

    def cancel(self, code: int, message: str) -> None:
        self.forwarder._post(self.forwarder._send, self.endpoint, [
            self.request_id, b"cancel", json.dumps({"code": int(code), "message": message}).encode()])


class Relay:
    """A job run for a peer: its responder (every chunk and the final answer go back to the peer),
    and what the peer sends after the request (``apply``, on this node's reactor)."""

    __slots__ = ("forwarder", "identity", "request_id", "engine", "handle")

    def __init__(self, forwarder: Forwarder, identity: bytes, request_id: bytes) -> None:
        self.forwarder = forwarder
        self.identity = identity
        self.request_id = request_id
        self.engine = None
        self.handle = None  # the job's, once opened on the reactor

    def apply(self, kind: bytes, payload: bytes) -> None:
        handle = self.handle
        if handle is None:
            return
        if kind == b"chunk":
            handle.push(payload)
        elif kind == b"end":
            handle.close()
        else:
            handle.cancel(*error_of(payload, Code.UNAVAILABLE, "cancelled by the forwarding node"))

    def credit(self, nbytes: int) -> None:
        self.forwarder.reply([self.identity, self.request_id, b"credit", str(nbytes).encode()])

    def meta(self, meta) -> None:
        self.forwarder.reply([self.identity, self.request_id, b"meta", msgpack.packb(meta)])

    def chunk(self, data: bytes) -> None:
        self.forwarder.reply([self.identity, self.request_id, b"chunk", bytes(data)])

    def end(self) -> None:
        self.forwarder.reply([self.identity, self.request_id, b"end", b""])

    def error(self, code: int, message: str) -> None:
        self.forwarder.reply([self.identity, self.request_id, b"error",
                              json.dumps({"code": int(code), "message": message}).encode()])
