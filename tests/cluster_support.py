"""A cluster on one machine for tests and benchmarks: a real etcd, and cocained nodes that each live
in their own network namespace (a host of their own, joined by veth pairs to a bridge), so the same
manifest with the same endpoints runs unchanged on every node.

Needs root and ``ip netns`` (iproute2); :func:`namespaces_unavailable` says why not, for a skip.
Addresses are a private /24 inside these namespaces and the bridge only; nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import zmq

from support import Client, Daemon, alive, wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PREFIX = "cc"  # of every namespace and bridge these tests make: c(luster) c(ocaine)
_serial = itertools.count(1)
TTL = 3  # the nodes' lease TTL in these tests (the default)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None if they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "no ip command (apt-get install iproute2)"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def etcd_unavailable() -> str | None:
    return None if os.access(ETCD, os.X_OK) else f"no etcd at {ETCD} (apt-get install etcd-server)"


def _clean_stale() -> None:
    """Namespaces and bridges left by a test run that was killed (their pid is in their name)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX) and name[len(PREFIX):].split("x")[0].isdigit():
            if not alive(int(name[len(PREFIX):].split("x")[0])):
                _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX + "b") and name[len(PREFIX) + 1:].split("x")[0].isdigit():
            if not alive(int(name[len(PREFIX) + 1:].split("x")[0])):
                _ip("link", "del", name, check=False)


class Network:
    """A bridge in this namespace (the host, where etcd and the tests run) and one namespace per node."""

    def __init__(self, hosts: int) -> None:
        _clean_stale()
        self.tag = f"{os.getpid()}x{next(_serial)}"
        self.bridge = f"{PREFIX}b{self.tag}"
        self.subnet = self._free_subnet()
        self.gateway = f"{self.subnet}.1"  # the bridge's address: etcd listens here
        self.hosts: list[str] = []  # namespace names
        self.addresses: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for _ in range(hosts):
                self.add_host()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _free_subnet() -> str:
        used = _ip("-o", "-4", "addr", "show").stdout
        start = os.getpid() % 200
        for i in range(200):
            subnet = f"10.213.{(start + i) % 200 + 20}"
            if f" {subnet}." not in used:
                return subnet
        raise RuntimeError("no free 10.213.x.0/24 subnet for the test network")

    def add_host(self) -> int:
        """One more namespace on the bridge; returns its index."""
        index = len(self.hosts)
        name = f"{PREFIX}{self.tag}n{index}"
        host_end, inner = f"{PREFIX}v{self.tag}n{index}"[:15], f"{PREFIX}i{index}"
        address = f"{self.subnet}.{index + 2}"
        _ip("netns", "add", name)
        self.hosts.append(name)
        self.addresses.append(address)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("-n", name, "link", "set", inner, "name", "eth0")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("link", "set", host_end, "master", self.bridge)
        _ip("link", "set", host_end, "up")
        return index

    def partition(self, index: int, cut: bool = True) -> None:
        """Cut a host off the network (or reconnect it)."""
        _ip("-n", self.hosts[index], "link", "set", "eth0", "down" if cut else "up")

    def close(self) -> None:
        for name in self.hosts:
            _ip("netns", "del", name, check=False)
        _ip("link", "del", self.bridge, check=False)


class Etcd:
    """A real etcd on the bridge's address, with auto-compaction as docs/cluster.md recommends."""

    def __init__(self, tmp: Path, address: str, port: int = 2379) -> None:
        self.tmp = tmp
        self.address = address
        self.port = port
        self.url = f"etcd://{address}:{port}"
        self.log_path = tmp / "etcd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Etcd:
        self.tmp.mkdir(parents=True, exist_ok=True)
        client, peer = f"http://{self.address}:{self.port}", f"http://{self.address}:{self.port + 1}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", "test", "--data-dir", str(self.tmp / "data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"test={peer}",
                 "--auto-compaction-mode=revision", "--auto-compaction-retention=1000"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self.healthy, timeout=20, message=f"etcd to answer (log: {self.log_path})")
        return self

    def healthy(self) -> bool:
        assert self.proc.poll() is None, f"etcd exited:\n{self.log_path.read_text()[-3000:]}"
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.port}/health", timeout=0.5) as r:
                return b"true" in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def ctl(self, *args: str) -> str:
        """etcdctl against this etcd (etcd-client), for inspecting keys."""
        return subprocess.run(["etcdctl", "--endpoints", f"{self.address}:{self.port}", *args],
                              env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True,
                              check=True, timeout=10).stdout


class ClusterNode(Daemon):
    """A real cocained in host ``index`` of ``network``, in the cluster on ``etcd``."""

    def __init__(self, tmp: Path, context: zmq.Context, network: Network, index: int, etcd: Etcd,
                 *extra: str, ttl: int = 3, instance: str = "default") -> None:
        super().__init__(tmp, context, *extra)
        self.network = network
        self.index = index
        self.etcd = etcd
        self.name = f"node-{index}"
        self.address = network.addresses[index]
        self.management = f"tcp://{self.address}:5000"
        self.ttl = ttl
        self.instance = instance

    def start(self, wait: bool = True) -> ClusterNode:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.network.hosts[self.index], self.python, "-m", "cocaine.core.daemon.main",
             "--cluster", self.etcd.url, "--node-name", self.name, "--advertise-address", self.address,
             "--cluster-ttl", str(self.ttl), "--instance", self.instance,
             "--storage-location", str(self.storage), "--runtime-dir", str(self.runtime),
             "--management", self.management, "--log-level", "debug", "--stop-timeout", "5", *self.extra],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_started()
        return self

    def wait_started(self) -> None:
        self._wait_answering(timeout=30)

    def endpoint(self, port: int) -> str:
        """Where the test reaches a port this node's apps bind."""
        return f"tcp://{self.address}:{port}"

    def cluster(self) -> dict:
        return self.request({"version": 2, "action": "info"})["cluster"]

    def running(self, app: str) -> bool:
        reply = self.request({"version": 2, "action": "info"})
        return reply["apps"].get(app, {}).get("state") == "running"

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the daemon; its workers, left behind, are killed too (they die with their parent's
        sockets otherwise only after their heartbeat)."""
        workers = self.workers()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_nodes(tmp: Path, context: zmq.Context, network: Network, etcd: Etcd, count: int, **kwargs) -> list[ClusterNode]:
    """``count`` nodes started at once (they start in parallel; the wait is for the slowest)."""
    nodes = [ClusterNode(tmp / f"node-{i}", context, network, i, etcd, **kwargs) for i in range(count)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_started()
    return nodes


def stop_nodes(nodes: list[ClusterNode]) -> None:
    """SIGTERM every node at once, then wait for each."""
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            if node.proc is not None:
                node.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        node.close()


def call(context: zmq.Context, address: str, body: bytes, timeout: float = 10.0) -> list[bytes]:
    client = Client(context, address, timeout)
    try:
        return client.call(body)
    finally:
        client.close()



# -- fixtures a test module imports: one network and one etcd per module, three fresh nodes per test --
@pytest.fixture(scope="module")
def network():
    reason = namespaces_unavailable() or etcd_unavailable()
    if reason:
        pytest.skip(reason)
    net = Network(hosts=4)
    yield net
    net.close()


@pytest.fixture(scope="module")
def etcd(network, tmp_path_factory):
    server = Etcd(tmp_path_factory.mktemp("etcd"), network.gateway).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(request, tmp_path, zmq_context, network, etcd):
    """Three nodes in an instance of their own (a fresh key space in the module's etcd)."""
    name = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in request.node.name)
    instance = f"{name[:48]}-{next(_serial)}"
    nodes = start_nodes(tmp_path, zmq_context, network, etcd, 3, instance=instance, ttl=TTL)
    yield nodes
    stop_nodes(nodes)
