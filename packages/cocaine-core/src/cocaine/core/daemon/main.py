"""``cocained``: host the apps in storage and serve the management protocol until told to stop.

SIGTERM or SIGINT stop every app (and so every worker) and exit 0; SIGHUP makes the running apps
match storage again.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import signal
import sys
import tempfile
import threading

import zmq

from cocaine.core import __version__, logs
from cocaine.core.daemon.node import Node
from cocaine.core.errors import CocaineError, InstanceLocked
from cocaine.core.management import handler
from cocaine.core.management.auth import DEFAULT_MAX_CLOCK_SKEW, Guard
from cocaine.core.management.users import Users
from cocaine.core.plugins import Registry
from cocaine.core.security import APPS, DEFAULT_MAX_MESSAGE_SIZE, MANAGEMENT, Curve, SocketSecurity
from cocaine.core.storage.files import check_key
from cocaine.core.transport import split_envelope

log = logging.getLogger("cocained")

TERM_TIMEOUT = 5.0


def default_runtime_dir(instance: str) -> str:
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "cocaine", instance)
    return os.path.join(tempfile.gettempdir(), f"cocaine-{os.getuid()}", instance)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cocained", description="The cocaine application server.")
    parser.add_argument("--instance", default="default", help="instance name (default: %(default)s)")
    parser.add_argument("--storage", help="storage plugin (default: files, or etcd with --cluster)")
    parser.add_argument("--storage-location", default="/var/lib/cocaine",
                        help="where the storage keeps its data (default: %(default)s)")
    cluster = parser.add_argument_group("cluster (docs/cluster.md; needs cocaine-cluster)")
    cluster.add_argument("--cluster", metavar="etcd://HOST:PORT[,HOST:PORT...]",
                         help="join the cluster named by --instance on these etcd members: manifests, "
                              "membership and timers are shared (default: a node alone, files storage)")
    cluster.add_argument("--node-name", help="this node's name in the cluster (default: the host name)")
    cluster.add_argument("--advertise-address", metavar="ADDR",
                         help="the address other nodes and clients reach this node's endpoints at "
                              "(default: the host's address on the default route)")
    cluster.add_argument("--cluster-ttl", type=int, default=3, metavar="SECONDS",
                         help="the TTL of this node's lease: a node that stops answering leaves the "
                              "cluster after it (default: %(default)s)")
    parser.add_argument("--management", action="append", metavar="ENDPOINT",
                        help="management endpoint, repeatable (default: tcp://*:5000)")
    parser.add_argument("--runtime-dir", help="folder for ipc sockets (default: under $XDG_RUNTIME_DIR or /tmp)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=logs.FORMATS,
                        help="text: one greppable line per record; json: one JSON object per line")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)")
    parser.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds workers get to exit when an app stops (default: %(default)s)")
    security = parser.add_argument_group("security (docs/security.md)")
    security.add_argument("--require-signatures", action="store_true",
                          help="serve only signed management requests (version 3)")
    security.add_argument("--max-clock-skew", type=positive, default=DEFAULT_MAX_CLOCK_SKEW, metavar="SECONDS",
                          help="how far a signed request's timestamp may be from this clock (default: %(default)s)")
    security.add_argument("--add-user", nargs=2, action="append", default=[], metavar=("NAME", "PUBKEY.pem"),
                          help="store NAME's public key (all permissions) before serving; repeatable")
    security.add_argument("--curve-secret-key", metavar="FILE",
                          help="enable CURVE on every network-facing socket with this ZeroMQ secret certificate")
    security.add_argument("--curve-clients", metavar="DIR",
                          help="folder of the client public certificates (*.key) allowed to connect")
    security.add_argument("--curve-management-clients", metavar="DIR",
                          help="folder of those allowed on the management endpoints (default: --curve-clients)")
    security.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE, metavar="BYTES",
                          help="larger frames disconnect their sender, on every network-facing socket "
                               "(default: %(default)s)")
    parser.add_argument("--version", action="version", version=f"cocained {__version__}")
    args = parser.parse_args(argv)
    if bool(args.curve_secret_key) != bool(args.curve_clients):
        parser.error("--curve-secret-key and --curve-clients go together")
    if args.curve_management_clients and not args.curve_secret_key:
        parser.error("--curve-management-clients needs --curve-secret-key and --curve-clients")
    if args.cluster:
        if args.storage not in (None, "etcd"):
            parser.error(f"--cluster keeps the apps in etcd: it cannot go with --storage {args.storage}")
        args.storage, args.storage_location = "etcd", args.cluster
    elif args.node_name or args.advertise_address:
        parser.error("--node-name and --advertise-address need --cluster")
    args.storage = args.storage or "files"
    if args.cluster_ttl < 2:
        parser.error(f"--cluster-ttl: etcd grants leases of at least 2 s, got {args.cluster_ttl}")
    if args.node_name is not None:
        try:
            check_key(args.node_name)
        except CocaineError as e:
            parser.error(f"--node-name: {e}")
    if args.max_message_size < 1024:
        parser.error(f"--max-message-size: expected at least 1024 bytes, got {args.max_message_size}")
    return args


def positive(value: str) -> float:
    number = float(value)
    if not (number > 0 and number < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value}")
    return number


class Daemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.registry = Registry.load()
        if args.cluster and "etcd" not in self.registry.names("storage"):
            raise CocaineError("--cluster needs the cocaine-cluster package (pip install cocaine-cluster)")
        storage_class = self.registry.get("storage", args.storage)
        self.storage = storage_class(args.storage_location, args.instance)
        try:
            self.storage.lock()  # one daemon per instance: two would both write the store
        except InstanceLocked as e:
            raise CocaineError(f"{e}: stop that daemon first, or give this one another --instance "
                               f"or --storage-location") from None
        self.context = zmq.Context()
        self.curve = None
        if args.curve_secret_key:
            self.curve = Curve(args.curve_secret_key, {
                MANAGEMENT: args.curve_management_clients or args.curve_clients, APPS: args.curve_clients})
            self.curve.start(self.context)  # before any socket binds: without ZAP, CURVE admits anyone
        self.security = SocketSecurity(max_message_size=args.max_message_size, curve=self.curve)
        runtime_dir = args.runtime_dir or default_runtime_dir(args.instance)
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        self.node = Node(registry=self.registry, storage=self.storage, runtime_dir=runtime_dir,
                         instance=args.instance, zmq_context=self.context, stop_timeout=args.stop_timeout,
                         security=self.security)
        self.guard = Guard(Users(self.storage), require_signatures=args.require_signatures,
                           max_clock_skew=args.max_clock_skew)
        self.sockets: list[zmq.Socket] = []
        self._signals: list[int] = []
        self.metrics = None

    def bind(self, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            try:
                sock = self.security.bind(self.context, zmq.ROUTER, endpoint, MANAGEMENT)
            except zmq.ZMQError as e:
                raise CocaineError(f"--management {endpoint}: cannot bind: {e.strerror}") from e
            self.sockets.append(sock)

    def join_cluster(self) -> None:
        """A shared storage joins this node to its cluster before the apps load."""
        args = self.args
        self.storage.attach(self.node, {"node-name": args.node_name, "advertise-address": args.advertise_address,
                                        "ttl": args.cluster_ttl, "management": args.management})

    def serve_metrics(self, address: str) -> None:
        from cocaine.core.daemon.metrics import MetricsServer  # prometheus_client only when asked for

        self.metrics = MetricsServer(self.node, address)
        log.info("serving Prometheus metrics at http://%s/metrics", address)

    def add_users(self, users: list[tuple[str, str]]) -> None:
        """``--add-user``: whoever starts the daemon installs keys; the first user comes this way."""
        for name, path in users:
            try:
                with open(path, encoding="utf-8") as f:
                    pem = f.read(1 << 16)
            except (OSError, UnicodeDecodeError) as e:
                raise CocaineError(f"--add-user {name} {path}: cannot read the public key: {e}") from None
            try:
                user = self.guard.users.add(name, {"public-key": pem, "permissions": ["*"]}, replace=True)
            except CocaineError as e:
                raise CocaineError(f"--add-user {name} {path}: {e}") from None
            log.info("user %s: key %s installed from %s", name, user.summary()["fingerprint"], path)
        if self.args.require_signatures and not self.guard.users.names():
            log.warning("signatures are required but storage holds no user key: nobody can manage this daemon "
                        "(add one with --add-user NAME PUBKEY.pem)")

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda s, _frame: self._signals.append(s))
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        log.info("cocained %s serving management on %s", __version__, ", ".join(self.args.management))
        while True:
            for source, _ in poller.poll():
                if source == wake_r:
                    os.read(wake_r, 512)
                else:
                    self._answer(source)
            while self._signals:
                signum = self._signals.pop(0)
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading every app from storage")
                    self.node.reload_all()
                    if self.curve is not None:
                        self._reload_curve_keys()
                else:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    return

    def _answer(self, sock: zmq.Socket) -> None:
        while True:
            try:
                received = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            envelope, request = split_envelope([frame.bytes for frame in received])
            reply = handler.handle(self.node, request, self.guard, _peer(received[-1]))
            body = json.dumps(reply, default=str).encode()
            try:
                sock.send_multipart([*envelope, body], zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.warning("cannot answer a management client: %s", e.strerror)

    def _reload_curve_keys(self) -> None:
        try:
            self.curve.reload()
            log.info("SIGHUP: CURVE client keys re-read")
        except CocaineError as e:
            log.error("SIGHUP: CURVE client keys not re-read, the old ones stay: %s", e)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        # Apps stop while this node is still a cluster member: what reaches a stopping app can still be
        # forwarded to a peer (engine.overflow "forward"), and records show the apps stopping.
        self.node.stop_all()
        self.storage.close()
        for sock in self.sockets:
            sock.close(0)
        if self.curve is not None:
            self.curve.stop()
        # A hung worker thread (thread backend) never closes its socket, and term() would wait for it
        # forever: wait a bounded time, then exit anyway.
        terminating = threading.Thread(target=self.context.term, name="zmq-term", daemon=True)
        terminating.start()
        terminating.join(TERM_TIMEOUT)
        if terminating.is_alive():
            log.warning("abandoned worker threads still hold sockets; exiting without them")
        self.storage.unlock()  # last: a daemon started now finds every app of this one stopped


def _peer(frame: zmq.Frame) -> str | None:
    """Where a management request came from, for the log: the peer's address and its CURVE key."""
    try:
        address = frame.get("Peer-Address")
    except zmq.ZMQError:
        address = None
    try:
        key = frame.get("User-Id")
    except zmq.ZMQError:
        key = None
    return f"{address} (CURVE key {key})" if key else address


def raise_open_files_limit() -> None:
    """Use the hard limit of open descriptors, not the soft one (often 1024): every connection of a
    TCP driver (http-server, raw-socket-server) is a descriptor."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open files limit: %s", e)


def freeze_startup_objects() -> None:
    """Move what start-up made (the modules of every plugin, the registry, the sockets) out of the
    cyclic collector's reach. A full collection walks every tracked object: over the daemon's heap
    of imported modules (~40,000 objects) that pauses every reactor for 20 to 70 ms under load, a
    request's p99 on its own (docs/benchmarks.md, "HTTP"). These objects live as long as the daemon,
    so a collection never frees one; apps start afterwards, so their objects stay collectable. The
    garbage start-up left (argparse's cycles) goes first, rather than stay frozen for good."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.management = args.management or ["tcp://*:5000"]
    logs.configure(args.log_level, args.log_format)
    raise_open_files_limit()
    try:
        daemon = Daemon(args)
    except CocaineError as e:
        log.error("%s", e)
        return 2
    try:
        daemon.add_users(args.add_user)
        daemon.bind(args.management)
        if args.metrics:
            daemon.serve_metrics(args.metrics)
    except CocaineError as e:
        log.error("%s", e)
        daemon.close()
        return 2
    try:
        daemon.join_cluster()
        freeze_startup_objects()
        daemon.node.load_all()
        daemon.serve()
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
