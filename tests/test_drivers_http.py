"""``http-server`` end to end with real clients (curl, ``http.client``, raw sockets) against a real
daemon: keep-alive, pipelining, chunked both ways, 100-continue, HEAD, HTTP/1.0, server-sent events,
the error table (docs/http.md), streamed uploads in bounded memory, and hostile clients (slowloris,
a thousand idle connections, fuzzed request heads)."""

from __future__ import annotations

import http.client
import io
import json
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import (APP_WAIT_FOR_FILE, MemoryWatch, free_port, manifest, python_app, read_until_closed, rss,
                     tcp_connect, wait_for)

pytestmark = pytest.mark.timeout(120)

APP = APP_WAIT_FOR_FILE + '''
import json, os, time
from cocaine.python import Response

HERE = os.path.dirname(__file__)

def echo(request):
    return request.body

def info(request):
    meta = {k: v for k, v in request.meta.items() if k != "deadline"}
    return Response(json.dumps({**meta, "streamed": request.streamed}),
                    headers={"Content-Type": "application/json"})

def created(request):
    return Response(b"made", status=201, headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                                  ("Content-Length", "999"), ("Content-Type", "text/plain")])

def empty(request):
    return Response(None, status=204)

def events(request):
    """Server-sent events: event i+1 is produced only once the client has seen event i."""
    def stream():
        for i in range(3):
            yield f"data: {i}\\n\\n"
            if i < 2:
                wait_for_file(os.path.join(HERE, f"seen-{i}"))
    return Response(stream(), headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})

def count(request):
    total = 0
    for chunk in request:
        total += len(chunk)
    return str(total)

def fails(request):
    raise ValueError("secret detail")

def slow(request):
    time.sleep(1.5)
    return b"late"

def blocked(request):
    wait_for_file(os.path.join(HERE, "unblock"))
    return b"done"

def bad_meta(request):
    return Response(b"x", headers={"X-Bad": "a\\r\\nInjected: yes"})
'''

TASKS = {
    "echo": {}, "info": {}, "created": {}, "empty": {}, "events": {}, "fails": {}, "bad_meta": {},
    "count": {"max-body-size": 2 * 1024 ** 3, "body-timeout": 30},
    "slow": {"timeout": 0.3},
    "small": {"max-body-size": 1000, "max-header-size": 1024},
    "strict": {"header-timeout": 0.5, "keepalive-timeout": 0.5, "body-timeout": 0.5},
    "idle": {"max-connections": 2000, "keepalive-timeout": 120, "header-timeout": 120},
}
HANDLERS = {"small": "echo", "strict": "echo", "idle": "echo"}  # tasks served by another task's code


@pytest.fixture(scope="module")
def web(module_daemon, tmp_path_factory):
    """One app whose tasks are http-servers on free ports; returns {task: port}."""
    folder = tmp_path_factory.mktemp("http-app")
    source = APP + "".join(f"\n{task} = {handler}\n" for task, handler in HANDLERS.items())
    ports = {task: free_port() for task in TASKS}
    module_daemon.create("web", manifest(python_app(folder, source), {
        task: {"type": "http-server", "endpoint": f"127.0.0.1:{ports[task]}", **keys} for task, keys in TASKS.items()
    }, pool_limit=2, concurrency=4))
    ports["folder"] = folder
    return ports


def counters(daemon, task):
    return daemon.info("web")["tasks"][task]["counters"]


class _KeepOpen(io.BufferedReader):
    """A socket's buffered reader that outlives each response (http.client closes it after a body)."""

    def close(self) -> None:
        pass


class _Responses:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = _KeepOpen(socket.SocketIO(sock, "rb"))

    def makefile(self, mode):
        return self.file


_readers: dict[int, _Responses] = {}


def read_response(sock: socket.socket, method: str = "GET") -> http.client.HTTPResponse:
    """The next response on ``sock``; responses pipelined on one socket are read in turn."""
    reader = _readers.get(id(sock))
    if reader is None or reader.sock is not sock:
        reader = _readers[id(sock)] = _Responses(sock)
    response = http.client.HTTPResponse(reader, method=method)
    response.begin()
    return response


def dechunk(body: bytes) -> bytes:
    """A chunked body's content; fails on bad framing."""
    out = bytearray()
    while True:
        size, _, body = body.partition(b"\r\n")
        size = int(size, 16)
        if size == 0:
            assert body == b"\r\n"
            return bytes(out)
        out += body[:size]
        assert body[size:size + 2] == b"\r\n"
        body = body[size + 2:]


def curl(*args: str, data: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is needed (.ci/run installs it)"
    return subprocess.run(["curl", "--silent", "--show-error", "--noproxy", "*", *args], input=data,
                          capture_output=True, timeout=timeout)


# -- real clients -------------------------------------------------------------------------------------
def test_curl_reuses_one_keep_alive_connection_for_several_requests(web, module_daemon):
    before = counters(module_daemon, "echo")["connections"]
    url = f"http://127.0.0.1:{web['echo']}/"
    result = curl("-v", "--data", "one", url, "--next", "--data", "two", url, "--next", "--data", "three", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"onetwothree"
    assert result.stderr.count(b"Re-using existing connection") == 2
    assert counters(module_daemon, "echo")["connections"] == before + 1


def test_requests_and_connections_leave_no_cycles_for_the_collector(web, module_daemon):
    """Reference counting frees every request's objects (job, handle, exchange) and every closed
    connection's (its parser holds its callbacks) as soon as they are done: a cycle left per request
    is garbage only the cyclic collector frees, in pauses of the reactor (docs/benchmarks.md)."""

    def collected() -> int:
        return sum(module_daemon.info()["node"]["gc"]["collected"])

    before = collected()
    connection = http.client.HTTPConnection("127.0.0.1", web["echo"], timeout=10)
    for i in range(600):
        connection.request("POST", "/", body=b"%d" % i)
        assert connection.getresponse().read() == b"%d" % i
    connection.close()
    # With a cycle per request, the collections its growth triggers find thousands of objects.
    assert collected() - before < 150
    before = collected()
    for _ in range(300):  # a connection per request, which the client closes
        single = http.client.HTTPConnection("127.0.0.1", web["echo"], timeout=10)
        single.request("POST", "/", body=b"x")
        assert single.getresponse().read() == b"x"
        single.close()
    assert collected() - before < 150


def test_http_client_metadata_status_headers_and_head(web):
    connection = http.client.HTTPConnection("127.0.0.1", web["info"], timeout=10)
    connection.request("GET", "/some/path?a=1&b=%20x", headers={"X-One": "1", "Cookie": "c=1"})
    response = connection.getresponse()
    meta = json.loads(response.read())
    assert response.status == 200 and response.getheader("Content-Type") == "application/json"
    local = connection.sock.getsockname()
    assert meta["method"] == "GET" and meta["path"] == "/some/path" and meta["query"] == "a=1&b=%20x"
    assert meta["version"] == "1.1" and meta["peer"] == f"{local[0]}:{local[1]}"
    assert meta["headers"]["x-one"] == "1" and meta["headers"]["cookie"] == "c=1"
    assert meta["streamed"] is False
    # HEAD: the same head, no body; the connection stays usable.
    connection.request("HEAD", "/some/path")
    response = connection.getresponse()
    assert response.status == 200 and int(response.getheader("Content-Length")) > 0
    assert response.read() == b""
    connection.close()

    connection = http.client.HTTPConnection("127.0.0.1", web["created"], timeout=10)
    connection.request("POST", "/", body=b"x")
    response = connection.getresponse()
    assert response.status == 201 and response.read() == b"made"
    assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert response.getheader("Content-Length") == "4"  # the handler's own framing header is dropped
    connection.close()

    connection = http.client.HTTPConnection("127.0.0.1", web["empty"], timeout=10)
    connection.request("DELETE", "/thing")
    response = connection.getresponse()
    assert response.status == 204 and response.read() == b""
    assert response.getheader("Content-Length") is None and response.getheader("Transfer-Encoding") is None
    connection.close()


def test_pipelined_requests_are_answered_in_order(web):
    with tcp_connect(web["echo"]) as sock:
        sock.sendall(b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, len(str(i)), str(i).encode())
                              for i in range(20)))
        for i in range(20):
            response = read_response(sock)
            assert response.status == 200 and response.read() == str(i).encode()


def test_curl_chunked_upload_streams_to_the_handler(web):
    body = b"z" * (3 * 1024 * 1024 + 7)
    result = curl("-H", "Transfer-Encoding: chunked", "-T", "-", f"http://127.0.0.1:{web['count']}/upload", data=body)
    assert result.returncode == 0, result.stderr
    assert result.stdout == str(len(body)).encode()


def test_expect_100_continue(web):
    with tcp_connect(web["echo"]) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any byte of the body
        sock.sendall(b"hello")
        response = read_response(sock)
        assert response.status == 200 and response.read() == b"hello"
    # curl waits for the 100 before it sends a large body
    result = curl("-v", "-H", "Expect: 100-continue", "--data-binary", "@-", f"http://127.0.0.1:{web['count']}/",
                  data=b"y" * 2_000_000)
    assert result.stdout == b"2000000" and b"HTTP/1.1 100 Continue" in result.stderr


def test_server_sent_events_arrive_as_produced_with_curl_no_buffer(web):
    folder = web["folder"]
    proc = subprocess.Popen(["curl", "-sN", "--noproxy", "*", f"http://127.0.0.1:{web['events']}/"],
                            stdout=subprocess.PIPE)
    try:
        for i in range(3):
            assert proc.stdout.readline() == f"data: {i}\n".encode()
            assert proc.stdout.readline() == b"\n"
            (folder / f"seen-{i}").touch()  # only now does the handler produce the next event
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        for i in range(3):
            (folder / f"seen-{i}").unlink(missing_ok=True)


def test_a_streamed_response_is_chunked_and_http_1_0_gets_it_until_close(web):
    folder = web["folder"]
    events = b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    try:
        for version in (b"1.1", b"1.0"):
            with tcp_connect(web["events"]) as sock:
                sock.sendall(b"GET / HTTP/%s\r\nHost: x\r\n\r\n" % version)
                data = b""
                while b"data: 0" not in data:  # the first event, while the handler waits
                    data += sock.recv(4096)
                for i in range(2):
                    (folder / f"seen-{i}").touch()
                if version == b"1.1":
                    while not data.endswith(b"\r\n0\r\n\r\n"):
                        data += sock.recv(4096)
                else:
                    data += read_until_closed(sock)
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"Content-Length" not in head
            if version == b"1.1":
                assert b"\r\nTransfer-Encoding: chunked" in head
                assert dechunk(body) == events
            else:
                assert b"Transfer-Encoding" not in head and body == events
            for i in range(2):
                (folder / f"seen-{i}").unlink()
        # HTTP/1.0 with keep-alive gets keep-alive for a whole response
        result = curl("--http1.0", "-v", "-H", "Connection: keep-alive", f"http://127.0.0.1:{web['echo']}/a",
                      "--next", "--http1.0", "-H", "Connection: keep-alive", f"http://127.0.0.1:{web['echo']}/b")
        assert result.stderr.count(b"Re-using existing connection") == 1, result.stderr
    finally:
        for i in range(2):
            (folder / f"seen-{i}").unlink(missing_ok=True)


# -- the error table ------------------------------------------------------------------------------------
def test_an_app_error_is_500_with_a_short_body_and_the_traceback_in_the_log(web, module_daemon):
    connection = http.client.HTTPConnection("127.0.0.1", web["fails"], timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    body = response.read()
    assert response.status == 500 and body == b"Internal Server Error\n"
    wait_for(lambda: "secret detail" in module_daemon.log(), message="the traceback in the log")
    connection.request("GET", "/")  # the connection survives an app error
    assert connection.getresponse().status == 500
    connection.close()


def test_bad_response_metadata_is_500_and_nothing_is_injected(web):
    result = curl("-i", f"http://127.0.0.1:{web['bad_meta']}/")
    assert result.stdout.startswith(b"HTTP/1.1 500 ") and b"Injected" not in result.stdout


def test_a_deadline_is_504(web):
    result = curl("-i", f"http://127.0.0.1:{web['slow']}/")
    assert result.stdout.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")


def test_queue_full_and_stopping_are_503_with_retry_after(module_daemon, tmp_path):
    port = free_port()
    module_daemon.create("busy", manifest(python_app(tmp_path, APP), {
        "blocked": {"type": "http-server", "endpoint": f"127.0.0.1:{port}"}}, pool_limit=1, concurrency=1,
        queue_limit=1))
    accepted = lambda: module_daemon.info("busy")["tasks"]["blocked"]["stats"]["accepted"]  # noqa: E731
    first, second = tcp_connect(port), tcp_connect(port)
    try:
        first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: accepted() == 1)
        second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # queued (the queue holds one)
        wait_for(lambda: accepted() == 2)
        result = curl("-i", f"http://127.0.0.1:{port}/")
        assert result.stdout.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"\r\nRetry-After: 1\r\n" in result.stdout
        # Stopping: the app is deleted while its job hangs; when the daemon's stop timeout (5 s in
        # the tests) ends the wait, the running and the queued request are both answered 503.
        reply = module_daemon.request({"version": 2, "action": "delete", "apps": ["busy"]})
        assert reply["busy"] == {"deleted": True}
        for sock in (first, second):
            response = read_response(sock)
            assert response.status == 503 and response.getheader("Retry-After") == "1"
    finally:
        (tmp_path / "unblock").touch()
        first.close()
        second.close()
        if "busy" in module_daemon.info()["apps"]:
            module_daemon.request({"version": 2, "action": "delete", "apps": ["busy"]})


def test_a_malformed_request_is_400_and_the_connection_closes(web):
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"):
        with tcp_connect(web["echo"]) as sock:
            sock.sendall(garbage)
            data = read_until_closed(sock)
            assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in data, garbage


def test_too_large_head_is_431_and_too_large_body_413(web):
    with tcp_connect(web["small"]) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    with tcp_connect(web["small"]) as sock:  # a header line that never ends is cut off too
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 4000)
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    with tcp_connect(web["small"]) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")  # refused before the body is sent
        assert read_until_closed(sock).startswith(b"HTTP/1.1 413 ")
    with tcp_connect(web["small"]) as sock:  # and a client that asked first gets the 413 instead of a 100
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 413 ")
    with tcp_connect(web["small"]) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 413 ")


def test_slow_heads_get_408_and_idle_connections_close(web):
    with tcp_connect(web["strict"]) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost:")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    with tcp_connect(web["strict"]) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")  # the body stalls
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    with tcp_connect(web["strict"]) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).status == 200
        assert sock.recv(10) == b""  # the keep-alive timeout closes it quietly


# -- bounded memory and hostile clients -----------------------------------------------------------------
def test_a_1_gib_upload_streams_through_bounded_memory(web, module_daemon):
    assert curl("--data", "warm", f"http://127.0.0.1:{web['count']}/").stdout == b"4"  # start the workers
    memory = MemoryWatch(module_daemon.proc.pid, *module_daemon.workers())
    total = 1024 ** 3
    block = b"u" * (1024 * 1024)
    sock = tcp_connect(web["count"])
    sock.settimeout(60)

    def send():
        sock.sendall(b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // len(block)):
            sock.sendall(block)

    sender = threading.Thread(target=send)
    sender.start()
    while sender.is_alive():
        memory.sample()
        sender.join(0.05)
    try:
        response = read_response(sock)
        assert response.status == 200 and response.read() == str(total).encode()
    finally:
        sock.close()
    memory.assert_grew_less_than(32 * 1024 * 1024, total)


def test_slowloris_clients_are_cut_off_while_others_are_served(web):
    port = web["strict"]
    attackers = [tcp_connect(port) for _ in range(20)]
    try:
        for sock in attackers:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        deadline = time.monotonic() + 10
        cut = set()
        while len(cut) < len(attackers):
            assert time.monotonic() < deadline, f"{len(attackers) - len(cut)} slowloris connections still open"
            for i, sock in enumerate(attackers):
                if i in cut:
                    continue
                try:
                    sock.sendall(b"X")  # one byte at a time, never finishing the head
                except OSError:
                    cut.add(i)
                    continue
                sock.settimeout(0.01)
                try:
                    if sock.recv(4096).startswith(b"HTTP/1.1 408"):
                        cut.add(i)
                except TimeoutError:
                    pass
            # a bystander is served meanwhile, on a fresh connection each time
            with tcp_connect(port) as bystander:
                bystander.sendall(b"GET / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
                response = read_response(bystander)
                assert response.status == 200 and response.read() == b"ok"
    finally:
        for sock in attackers:
            sock.close()


def test_a_thousand_idle_connections_do_not_stop_a_bystander(web, module_daemon):
    port = web["idle"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds the 1000 client ends
    if soft < 1500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    start = rss(module_daemon.proc.pid)
    idle = []
    try:
        for i in range(1000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 2:
                sock.sendall(b"GET / HTTP/1.1\r\n")  # half of them in the middle of a head
            idle.append(sock)
        wait_for(lambda: counters(module_daemon, "idle")["open"] == 1000, message="1000 open connections")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(20):
            connection.request("POST", "/", body=str(i))
            assert connection.getresponse().read() == str(i).encode()
        connection.close()
        grew = rss(module_daemon.proc.pid) - start
        assert grew < 40 * 1024 * 1024, f"the daemon grew by {grew} bytes for 1000 idle connections"
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: counters(module_daemon, "idle")["open"] == 0, message="the idle connections to close")


TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~"), min_size=1,
                max_size=12)
ANY = st.binary(max_size=40)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(method=st.one_of(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS"]), ANY),
       target=st.one_of(st.just(b"/"), st.binary(max_size=30).map(lambda b: b"/" + b), ANY),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b""]),
       headers=st.lists(st.tuples(st.one_of(TOKEN.map(str.encode), ANY), ANY), max_size=6),
       body=st.binary(max_size=20))
def _fuzz_one(port, method, target, version, headers, body):
    request = method + b" " + target + b" " + version + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    with tcp_connect(port) as sock:
        sock.settimeout(5)
        try:
            sock.sendall(request + b"\r\n" + body)
            sock.shutdown(socket.SHUT_WR)
            data = read_until_closed(sock)
        except ConnectionResetError:
            return
    # whatever came back is a sequence of HTTP responses with valid status lines
    assert not data or data.startswith(b"HTTP/1.1 "), data[:100]


def test_fuzzed_request_lines_and_headers_get_an_answer_or_a_close_and_the_daemon_serves_on(web, module_daemon):
    _fuzz_one(web["echo"])
    result = curl("--data", "still here", f"http://127.0.0.1:{web['echo']}/")
    assert result.stdout == b"still here"
    assert module_daemon.proc.poll() is None


def test_bad_keys_are_named(module_daemon, tmp_path):
    reply = module_daemon.request({"version": 2, "action": "create", "apps": {"bad": manifest(
        python_app(tmp_path, APP), {"echo": {"type": "http-server", "endpoint": "127.0.0.1:1", "max-body-size": -1}})}})
    assert "tasks.echo.max-body-size" in json.dumps(reply)
