"""Turning an endpoint an app binds (as ``info`` shows it) into one this machine can connect to.

An app binds ``tcp://lo:9200`` (an interface), ``tcp://*:9200`` (every interface) or an address.
A client cannot connect to an interface name or to ``*``: those become the loopback address, the
interface's own address, or the daemon's host (the host of ``--endpoint``) when the daemon is on
another machine.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from cocaine.cli.errors import CliError
from cocaine.cli.keys import CurveClient

WILDCARDS = ("*", "0.0.0.0", "::", "[::]")
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
_SIOCGIFADDR = 0x8915


def split_tcp(endpoint: str) -> tuple[str, str] | None:
    """``tcp://host:port`` -> ``(host, port)``; None for another scheme."""
    scheme, _, address = endpoint.partition("://")
    if scheme != "tcp" or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    return host, port


def is_local(host: str) -> bool:
    """Whether ``host`` is this machine for sure: a wildcard, loopback, or a name for it."""
    if host in WILDCARDS or host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def interface_address(name: str) -> str | None:
    """The IPv4 address of a network interface of this machine (None: no such interface)."""
    if name not in {iface for _, iface in socket.if_nameindex()}:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def connectable(endpoint: str, management: str) -> str:
    """The address to connect to for an ``endpoint`` bound by the daemon at ``management``."""
    scheme = endpoint.partition("://")[0]
    if scheme == "inproc":
        raise CliError(f"{endpoint} is an inproc endpoint: only the daemon's own threads can reach it")
    parts = split_tcp(endpoint)
    if parts is None:
        return endpoint  # ipc:// paths are the same for everyone on the machine
    host, port = parts
    daemon = split_tcp(management)
    daemon_host = daemon[0] if daemon else "127.0.0.1"
    daemon_is_local = is_local(daemon_host)
    if host in WILDCARDS:
        host = "127.0.0.1" if daemon_is_local else daemon_host
    elif daemon_is_local and (address := interface_address(host)) is not None:
        host = address
    elif not daemon_is_local and _looks_like_interface(host):
        host = daemon_host  # another machine's interface: reach it through the daemon's address
    return f"tcp://{host}:{port}"


def _looks_like_interface(host: str) -> bool:
    """A bare name without dots (``lo``, ``eth0``), which ZeroMQ binds as an interface."""
    return "." not in host and ":" not in host and not host.startswith("[")


@contextmanager
def connected(kind: int, endpoint: str, curve: CurveClient | None,
              subscribe: list[str] | None = None) -> Iterator[zmq.Socket]:
    """A socket of ``kind`` connected to an app's ``endpoint`` (with the CLI's CURVE keys, if any), in a
    private context destroyed with linger 0 on the way out: nothing queued keeps the CLI alive."""
    context = zmq.Context()
    try:
        sock = context.socket(kind)
        sock.linger = 0
        if curve is not None:
            curve.apply(sock)
        for prefix in subscribe or ():
            sock.subscribe(prefix.encode())
        sock.connect(endpoint)
        yield sock
    finally:
        context.destroy(linger=0)
