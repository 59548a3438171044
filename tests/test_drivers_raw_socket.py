"""``raw-socket-server`` end to end: one connection is one streamed request, answered as it goes."""

import socket
import struct
import threading

import pytest

from support import (APP_SLOW_COUNT, APP_WAIT_FOR_FILE, MemoryWatch, free_port, manifest, python_app,
                     read_until_closed, tcp_connect, wait_for)

APP = APP_WAIT_FOR_FILE + APP_SLOW_COUNT + '''
import os, time

GO = os.path.join(os.path.dirname(__file__), "go")

def upper(request):
    for chunk in request:
        yield chunk.upper()

def stepwise(request):
    yield b"first"
    wait_for_file(GO)
    yield b"second"

def fails(request):
    raise RuntimeError("boom")

def flood(request):
    for _ in range(512):
        yield b"x" * 65536
'''


def serve(daemon, tmp_path, *tasks, **keys):
    """Create an app whose named tasks are raw socket servers; return the port of the first (or all)."""
    ports = {task: free_port() for task in tasks}
    m = manifest(python_app(tmp_path, APP), {
        task: {"type": "raw-socket-server", "endpoint": f"127.0.0.1:{port}", **keys} for task, port in ports.items()
    }, pool_limit=1)
    daemon.create("app", m)
    return ports if len(tasks) > 1 else ports[tasks[0]]


def counters(daemon, task):
    return daemon.info("app")["tasks"][task]["counters"]


def test_the_connection_is_the_request_and_the_response_comes_back(daemon, tmp_path):
    port = serve(daemon, tmp_path, "upper")
    with tcp_connect(port) as sock:
        sock.sendall(b"hello, ")
        sock.sendall(b"world")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b"HELLO, WORLD"
    wait_for(lambda: counters(daemon, "upper")["open"] == 0, message="the connection to close")
    assert counters(daemon, "upper")["bytes-in"] == 12


def test_the_handler_reads_while_the_client_sends_and_chunks_come_back_at_once(daemon, tmp_path):
    port = serve(daemon, tmp_path, "upper")
    with tcp_connect(port) as sock:
        sock.sendall(b"a")
        assert sock.recv(100) == b"A"  # answered while the request is still open
        sock.sendall(b"b")
        assert sock.recv(100) == b"B"
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""


def test_the_first_chunk_arrives_before_the_handler_finishes(daemon, tmp_path):
    port = serve(daemon, tmp_path, "stepwise")
    with tcp_connect(port) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b"first"
        assert not (tmp_path / "go").exists()  # the handler waits for it: it has not finished
        (tmp_path / "go").touch()
        assert read_until_closed(sock) == b"second"


def test_a_failing_handler_resets_the_connection_and_the_server_goes_on(daemon, tmp_path):
    port = serve(daemon, tmp_path, "fails")
    for _ in range(2):
        with tcp_connect(port) as sock:
            sock.shutdown(socket.SHUT_WR)
            with pytest.raises(ConnectionResetError):
                read_until_closed(sock)
    info = daemon.info("app")["tasks"]["fails"]
    assert info["counters"]["failed"] == 2 and info["stats"]["failed-by-code"] == {"502": 2}


def test_flow_control_keeps_memory_bounded_for_a_large_request(daemon, tmp_path):
    port = serve(daemon, tmp_path, "count")
    with tcp_connect(port) as sock:  # start the worker first
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b"0"
    memory = MemoryWatch(daemon.proc.pid, daemon.workers()[0])
    total = 64 * 1024 * 1024
    sock = tcp_connect(port)
    sender = threading.Thread(target=lambda: (sock.sendall(b"x" * total), sock.shutdown(socket.SHUT_WR)))
    sender.start()
    while sender.is_alive():
        memory.sample()
        sender.join(0.01)
    try:
        assert read_until_closed(sock) == str(total).encode()
    finally:
        sock.close()
    memory.assert_grew_less_than(16 * 1024 * 1024, total)


def test_connections_beyond_the_limit_wait_for_a_free_slot(daemon, tmp_path):
    port = serve(daemon, tmp_path, "upper", **{"max-connections": 2})
    first, second = tcp_connect(port), tcp_connect(port)
    try:
        for sock in (first, second):
            sock.sendall(b"x")
            assert sock.recv(10) == b"X"
        third = tcp_connect(port)  # the kernel's backlog takes it, the server does not yet
        third.sendall(b"y")
        info = counters(daemon, "upper")
        assert (info["open"], info["connections"], info["accepting"]) == (2, 2, False)
        first.shutdown(socket.SHUT_WR)
        assert read_until_closed(first) == b""
        assert third.recv(10) == b"Y"
        third.shutdown(socket.SHUT_WR)
        assert read_until_closed(third) == b""
    finally:
        for sock in (first, second, third):
            sock.close()


def test_slow_or_vanished_clients_are_cut_off_without_blocking_the_engine(daemon, tmp_path):
    ports = serve(daemon, tmp_path, "flood", "upper", **{"write-buffer": 65536})
    slow = tcp_connect(ports["flood"])  # never reads: the server's buffer for it overflows
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_for(lambda: counters(daemon, "flood")["too-slow"] == 1, message="the slow client to be cut off")
    with pytest.raises(ConnectionResetError):
        read_until_closed(slow)
    slow.close()
    gone = tcp_connect(ports["upper"])  # sends, then leaves at once with a reset
    gone.sendall(b"bye")
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()
    wait_for(lambda: counters(daemon, "upper")["client-gone"] == 1, message="the vanished client to be noticed")
    with tcp_connect(ports["upper"]) as sock:  # and the app still serves
        sock.sendall(b"still here")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b"STILL HERE"
    assert counters(daemon, "flood")["open"] == counters(daemon, "upper")["open"] == 0


@pytest.mark.parametrize("keys, error", [
    ({"endpoint": "tcp://127.0.0.1:9100/x"}, "tasks.t.endpoint: expected a TCP address host:port"),
    ({"endpoint": "127.0.0.1:0"}, "tasks.t.endpoint: expected a TCP address host:port such as 127.0.0.1:9300"),
    ({}, "tasks.t.endpoint: expected a TCP address host:port such as 127.0.0.1:9300 or *:9300, it is missing"),
    ({"endpoint": "*:9300", "max-connections": 0}, "tasks.t.max-connections: expected an integer >= 1, got 0"),
])
def test_bad_configuration_is_rejected_naming_the_field(daemon, tmp_path, keys, error):
    m = manifest(python_app(tmp_path, APP), {"t": {"type": "raw-socket-server", **keys}})
    reply = daemon.request({"version": 2, "action": "create", "apps": {"app": m}})
    assert error in reply["app"]["error"]
