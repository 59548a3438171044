"""``cocained``: host the apps in storage and serve the management protocol until told to stop.

SIGTERM or SIGINT stop every app (and so every worker) and exit 0; SIGHUP makes the running apps
match storage again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading

import zmq

from cocaine.core import __version__
from cocaine.core.daemon.node import Node
from cocaine.core.errors import CocaineError
from cocaine.core.management import protocol
from cocaine.core.plugins import Registry
from cocaine.core.transport import split_envelope

log = logging.getLogger("cocained")

# Requests past MAX_REQUEST_BYTES still get an error reply; past this the peer is disconnected.
HARD_MESSAGE_LIMIT = 64 << 20
TERM_TIMEOUT = 5.0


def default_runtime_dir(instance: str) -> str:
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "cocaine", instance)
    return os.path.join(tempfile.gettempdir(), f"cocaine-{os.getuid()}", instance)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cocained", description="The cocaine application server.")
    parser.add_argument("--instance", default="default", help="instance name (default: %(default)s)")
    parser.add_argument("--storage", default="files", help="storage plugin (default: %(default)s)")
    parser.add_argument("--storage-location", default="/var/lib/cocaine",
                        help="where the storage keeps its data (default: %(default)s)")
    parser.add_argument("--management", action="append", metavar="ENDPOINT",
                        help="management endpoint, repeatable (default: tcp://*:5000)")
    parser.add_argument("--runtime-dir", help="folder for ipc sockets (default: under $XDG_RUNTIME_DIR or /tmp)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds workers get to exit when an app stops (default: %(default)s)")
    parser.add_argument("--version", action="version", version=f"cocained {__version__}")
    return parser.parse_args(argv)


class Daemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = zmq.Context()
        self.registry = Registry.load()
        storage_class = self.registry.get("storage", args.storage)
        self.storage = storage_class(args.storage_location, args.instance)
        runtime_dir = args.runtime_dir or default_runtime_dir(args.instance)
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        self.node = Node(registry=self.registry, storage=self.storage, runtime_dir=runtime_dir,
                         instance=args.instance, zmq_context=self.context, stop_timeout=args.stop_timeout)
        self.sockets: list[zmq.Socket] = []
        self._signals: list[int] = []

    def bind(self, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            sock = self.context.socket(zmq.ROUTER)
            sock.linger = 0
            sock.maxmsgsize = HARD_MESSAGE_LIMIT
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as e:
                sock.close()
                raise CocaineError(f"--management {endpoint}: cannot bind: {e.strerror}") from e
            self.sockets.append(sock)

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
                else:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    return

    def _answer(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, request = split_envelope(frames)
            reply = protocol.handle(self.node, request)
            body = json.dumps(reply, default=str).encode()
            try:
                sock.send_multipart([*envelope, body], zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.warning("cannot answer a management client: %s", e.strerror)

    def close(self) -> None:
        self.node.stop_all()
        for sock in self.sockets:
            sock.close(0)
        # A hung worker thread (thread backend) never closes its socket, and term() would wait for it
        # forever: wait a bounded time, then exit anyway.
        terminating = threading.Thread(target=self.context.term, name="zmq-term", daemon=True)
        terminating.start()
        terminating.join(TERM_TIMEOUT)
        if terminating.is_alive():
            log.warning("abandoned worker threads still hold sockets; exiting without them")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.management = args.management or ["tcp://*:5000"]
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        daemon = Daemon(args)
        daemon.bind(args.management)
    except CocaineError as e:
        log.error("%s", e)
        return 2
    try:
        daemon.node.load_all()
        daemon.serve()
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
