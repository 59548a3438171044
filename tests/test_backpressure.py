"""Backpressure on streamed responses (docs/protocol.md, "Streamed responses"), end to end: a handler
that streams far faster than its client reads is paced by that client, not cancelled, over every
driver whose responses stream, and the daemon and the worker stay within bounded memory (from
/proc). The suite reads 256 MiB at 64 MiB/s per case; bench/bench_backpressure.py reads 1 GiB at
10 MiB/s and records the figures in docs/benchmarks.md."""

import socket
import struct

import pytest

from runtimes import PACED
from slow_readers import flood_task, MIB, READ_SIZE, READERS, read_raw_socket
from support import MemoryWatch, free_port, tcp_connect, wait_for

pytestmark = pytest.mark.timeout(120)

SIZE = 256 * MIB
RATE = 64 * MIB  # bytes/s: slower than any handler here produces
LIMIT = 64 * MIB  # growth allowed to the daemon and to the worker (issue 11)


def serve_flood(daemon, language: str, args: str, driver: str) -> int:
    """The conformance app's flood task behind ``driver`` on one worker; returns its port."""
    port = free_port()
    daemon.create("flood", {"type": language, "args": args, "engine": {"pool-limit": 1},
                            "tasks": {"flood": flood_task(driver, port)}})
    return port


def worker_pid(daemon) -> int:
    (worker,) = daemon.info("flood")["pool"]["workers"]
    return worker["pid"]


@pytest.mark.parametrize("driver", READERS)
@pytest.mark.parametrize("language", PACED)
def test_a_huge_response_to_a_slow_client_completes_in_bounded_memory(daemon, language, conformance_app, driver):
    port = serve_flood(daemon, language, conformance_app, driver)
    read = READERS[driver]
    assert read(port, MIB, RATE, lambda: None) == MIB  # the worker is up, and warm
    watch = MemoryWatch(daemon.proc.pid, worker_pid(daemon))
    assert read(port, SIZE, RATE, watch.sample) == SIZE
    watch.assert_grew_less_than(LIMIT, SIZE)


@pytest.mark.parametrize("language", PACED)
def test_a_client_that_leaves_mid_response_cancels_its_job(daemon, language, conformance_app):
    port = serve_flood(daemon, language, conformance_app, "raw-socket-server")
    with tcp_connect(port) as sock:
        sock.sendall(b"%d" % SIZE)
        sock.shutdown(socket.SHUT_WR)
        got = 0
        while got < MIB:
            got += len(sock.recv(READ_SIZE))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # leave with a reset
    wait_for(lambda: daemon.info("flood")["tasks"]["flood"]["counters"]["client-gone"] == 1,
             message="the server to notice the client left")
    # The handler waiting for credit was told: its job ends, and the one worker serves the next client.
    wait_for(lambda: daemon.info("flood")["pool"]["busy"] == 0, message="the job to end")
    assert read_raw_socket(port, 1000, RATE, lambda: None) == 1000
    assert daemon.info("flood")["pool"]["workers"][0]["pid"] == worker_pid(daemon)
