"""Clients that read a huge streamed response at a set rate, one per driver, for the backpressure
tests and bench/bench_backpressure.py. Each asks the conformance app's ``flood`` task (on
127.0.0.1:``port``) for ``size`` bytes and calls ``progress()`` after every MiB it reads (to sample memory); it returns how many
bytes the response had."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable

from cocaine.drivers.native_client import Client
from cocaine.drivers.zeromq_client import StreamClient

READ_SIZE = 65536
MIB = 1 << 20


class Pace:
    """Holds a reader to ``rate`` bytes per second: before each read it waits until the bytes read
    so far are due. This paces a client (the point of the test); it synchronises nothing."""

    def __init__(self, rate: float, progress: Callable[[], None]) -> None:
        self.rate = rate
        self.progress = progress
        self.started = time.monotonic()
        self.done = 0
        self.reported = 0

    def took(self, nbytes: int) -> None:
        self.done += nbytes
        if self.done - self.reported >= MIB:
            self.reported = self.done
            self.progress()
        ahead = self.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def read_raw_socket(port: int, size: int, rate: float, progress: Callable[[], None]) -> int:
    pace = Pace(rate, progress)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(str(size).encode())
        sock.shutdown(socket.SHUT_WR)
        while data := sock.recv(READ_SIZE):
            pace.took(len(data))
    return pace.done


def read_native(port: int, size: int, rate: float, progress: Callable[[], None]) -> int:
    pace = Pace(rate, progress)
    with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
        for chunk in client.request(str(size).encode(), paced=True):
            pace.took(len(chunk))
    return pace.done


def read_zeromq_stream(port: int, size: int, rate: float, progress: Callable[[], None]) -> int:
    pace = Pace(rate, progress)
    with StreamClient(f"tcp://127.0.0.1:{port}", timeout=60) as client:
        for chunk in client.request(str(size).encode()):
            pace.took(len(chunk))
    return pace.done


def read_http(port: int, size: int, rate: float, progress: Callable[[], None]) -> int:
    pace = Pace(rate, progress)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/flood", body=str(size).encode())
        response = connection.getresponse()
        assert response.status == 200, response.status
        while data := response.read(READ_SIZE):
            pace.took(len(data))
    finally:
        connection.close()
    return pace.done


#: driver -> reader(port, size, rate, progress); every task listens on 127.0.0.1:port
READERS = {
    "raw-socket-server": read_raw_socket,
    "native-server": read_native,
    "http-server": read_http,
    "zeromq-server": read_zeromq_stream,
}


def flood_task(driver: str, port: int) -> dict:
    """The manifest of the ``flood`` task behind ``driver`` on 127.0.0.1:``port``, as its reader expects."""
    if driver == "native-server":
        return {"type": driver, "endpoint": f"tcp://127.0.0.1:{port}"}
    if driver == "zeromq-server":
        return {"type": driver, "endpoint": f"tcp://127.0.0.1:{port}", "replies": "stream"}
    return {"type": driver, "endpoint": f"127.0.0.1:{port}"}
