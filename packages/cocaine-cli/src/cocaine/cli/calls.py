"""``cocaine-admin call``: send one request to an app's task and yield the response chunks.

One function per driver that serves requests, in :data:`CALLERS` under the driver's name. Each takes
the task's connectable endpoint, the request body, a timeout and the CURVE keys (None for a daemon
without CURVE), and yields the response chunks as they arrive; it raises :class:`CallFailed` for an
error reply and :class:`Unreachable` when nothing comes back in time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import zmq

from cocaine.cli.endpoints import connected
from cocaine.cli.errors import BadReply, CallFailed, CliError, EndpointError, Unreachable
from cocaine.cli.keys import CurveClient
from cocaine.core.errors import JobError
from cocaine.drivers import zeromq_server
from cocaine.drivers.native_client import Client
from cocaine.drivers.zeromq_client import StreamClient

Caller = Callable[[str, bytes, float, "CurveClient | None"], Iterator[bytes]]


def call_zeromq_server(endpoint: str, body: bytes, timeout: float, curve: CurveClient | None) -> Iterator[bytes]:
    """``zeromq-server`` (docs/drivers.md): one message out, one reply ``[ok, *chunks]`` or
    ``[error, code, message]`` back, so the chunks arrive together."""
    with connected(zmq.DEALER, endpoint, curve) as sock:
        sock.send_multipart([b"", body])
        if not sock.poll(int(timeout * 1000)):
            raise Unreachable(f"no reply from {endpoint} within {timeout:g} s")
        frames = sock.recv_multipart()
    status, *rest = frames[1:] if frames and frames[0] == b"" else frames
    if status == zeromq_server.OK:
        yield from rest
    elif status == zeromq_server.ERROR and len(rest) >= 2:
        raise CallFailed(int(rest[0]), rest[1].decode(errors="replace"))
    else:
        raise BadReply(f"{endpoint} answered something that is not a zeromq-server reply: {frames[:3]!r}")


def call_zeromq_stream(endpoint: str, body: bytes, timeout: float, curve: CurveClient | None) -> Iterator[bytes]:
    """``zeromq-server`` with ``"replies": "stream"`` (docs/drivers.md), through its Python client in
    ``cocaine-drivers``: the chunks stream, each credited as it is written out, so the handler goes
    at the pace of stdout; ``timeout`` bounds the wait for each."""
    return _through_client(StreamClient, endpoint, body, timeout, curve)


def call_native_server(endpoint: str, body: bytes, timeout: float, curve: CurveClient | None) -> Iterator[bytes]:
    """``native-server`` (docs/native-protocol.md), through its Python client in ``cocaine-drivers``:
    the chunks stream as the handler yields them; ``timeout`` bounds the wait for each."""
    return _through_client(Client, endpoint, body, timeout, curve)


def _through_client(client_class, endpoint: str, body: bytes, timeout: float,
                    curve: CurveClient | None) -> Iterator[bytes]:
    """One request through a client of ``cocaine-drivers`` (its own connection and context)."""
    context = zmq.Context()
    try:
        keys = (curve.public, curve.secret, curve.server) if curve is not None else None
        with client_class(endpoint, context=context, timeout=timeout, curve=keys) as client:
            try:
                yield from client.request(body)
            except JobError as e:
                raise CallFailed(e.code, e.message) from None
            except TimeoutError:
                raise Unreachable(f"no reply from {endpoint} within {timeout:g} s") from None
            except ValueError as e:  # a reply that is not of the protocol
                raise BadReply(f"{endpoint}: {e}") from None
    finally:
        context.destroy(linger=0)


def call_cluster(spec: str, instance: str, app: str, task: str, body: bytes, timeout: float,
            curve: CurveClient | None) -> Iterator[bytes]:
    """A native-server task on several nodes, through the cluster client in ``cocaine-cluster``
    (docs/cluster-client.md): the nodes come from etcd or a static list (``spec``), the client picks
    one by load and resends a refused request to another; ``timeout`` bounds the whole request."""
    try:
        from cocaine.cluster.client import ClusterClient, ClusterError, NodeSilent, nodes_from
    except ImportError as e:
        raise CliError(f"calling through a cluster needs the cocaine-cluster package: {e}") from None
    try:
        nodes = nodes_from(spec, instance, ready_timeout=timeout)
    except ValueError as e:
        raise EndpointError(f"--cluster {spec}: {e}") from None
    except ConnectionError as e:
        raise Unreachable(str(e)) from None
    context = zmq.Context()
    try:
        keys = (curve.public, curve.secret, curve.server) if curve is not None else None
        with ClusterClient(app, task, nodes, context=context, timeout=timeout, curve=keys) as client:
            try:
                yield from client.request(body)
            except NodeSilent as e:
                raise Unreachable(str(e)) from None
            except ClusterError as e:
                raise CallFailed(e.code, e.message) from None
    finally:
        nodes.close()
        context.destroy(linger=0)


CALLERS: dict[str, Caller] = {
    "zeromq-server": call_zeromq_server,
    "native-server": call_native_server,
}


def caller_for(task: dict) -> Caller | None:
    """The caller for a task, from its ``info``: its driver, and for ``zeromq-server`` its replies."""
    if task.get("type") == "zeromq-server" and task.get("replies") == "stream":
        return call_zeromq_stream
    return CALLERS.get(task.get("type", ""))
