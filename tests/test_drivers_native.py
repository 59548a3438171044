"""``native-server`` end to end: the streaming protocol, its options, flow control, and the client."""

import json

import msgpack
import pytest

from cocaine.core.errors import JobError
from cocaine.drivers import native_protocol
from cocaine.drivers.native_client import Client
from support import APP_SLOW_COUNT, APP_WAIT_FOR_FILE, MemoryWatch, dealer, endpoint, manifest, python_app, wait_for

APP = APP_WAIT_FOR_FILE + APP_SLOW_COUNT + '''
import asyncio, json, os, time

def echo(request):
    return request.body

def fails(request):
    raise ValueError("bad input")

def stepwise(request):
    # The first chunk, then the rest only once the test has read it and created the file.
    yield b"first"
    wait_for_file(request.text())
    yield b"second"

def relay(request):
    for chunk in request:
        yield b"got " + chunk

def work(request):
    job = request.json()
    if job.get("wait"):
        wait_for_file(job["wait"])
    with open(job["log"], "a") as log:
        log.write(job["name"] + "\\n")
    return job["name"]

RELEASE = os.path.join(os.path.dirname(__file__), "release")

def hold(request):
    # Never reads its request; returns once the test creates "release" next to the app.
    wait_for_file(RELEASE)
    return b"released"

async def aecho(request):
    await asyncio.sleep(0)
    return request.body

async def astream(request):
    async for chunk in request:
        await asyncio.sleep(0)
        yield chunk.upper()
'''


def serve(daemon, tmp_path, *tasks, **engine):
    """Create an app whose named tasks are native servers; return {task: endpoint}."""
    addresses = {task: endpoint() for task in tasks}
    m = manifest(python_app(tmp_path, APP),
                 {task: {"type": "native-server", "endpoint": address} for task, address in addresses.items()},
                 **engine)
    daemon.create("app", m)
    return addresses


@pytest.fixture
def client(zmq_context):
    made = []

    def make(address, timeout=20.0):
        made.append(Client(address, context=zmq_context, timeout=timeout))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_a_request_gets_its_answer_and_an_error_answers_an_error(daemon, tmp_path, client):
    addresses = serve(daemon, tmp_path, "echo", "fails")
    c = client(addresses["echo"])
    assert c.call(b"hello") == b"hello"
    assert c.call(b"") == b""
    with pytest.raises(JobError) as failed:
        client(addresses["fails"]).call(b"x")
    assert (failed.value.code, failed.value.message) == (502, "ValueError: bad input")
    assert c.call(b"still serving") == b"still serving"
    info = daemon.info("app")["tasks"]
    assert info["fails"]["stats"]["failed-by-code"] == {"502": 1}
    assert info["echo"]["counters"]["requests"] == 3 and info["echo"]["counters"]["open"] == 0


def test_the_first_chunk_arrives_before_the_handler_finishes(daemon, tmp_path, client):
    address = serve(daemon, tmp_path, "stepwise")["stepwise"]
    flag = tmp_path / "go"
    call = client(address).request(str(flag).encode())
    chunks = iter(call)
    assert next(chunks) == b"first"
    assert not flag.exists()  # the handler is still waiting for it: it has not finished
    flag.touch()
    assert list(chunks) == [b"second"]


@pytest.mark.parametrize("task, backend, answer", [
    ("relay", "process", lambda chunk: b"got " + chunk),
    ("relay", "thread", lambda chunk: b"got " + chunk),
    ("astream", "process", bytes.upper),  # async def, async for over the request
])
def test_a_handler_reads_a_streamed_request_while_the_client_still_sends(daemon, tmp_path, client, task,
                                                                         backend, answer):
    address = serve(daemon, tmp_path, task, backend=backend)[task]
    call = client(address).request(b"a", stream=True)
    chunks = iter(call)
    assert next(chunks) == answer(b"a")  # answered before the rest of the request exists
    call.write(b"b")
    assert next(chunks) == answer(b"b")
    call.write(b"c")
    call.end()
    assert list(chunks) == [answer(b"c")]


def test_a_queued_streamed_request_keeps_its_opening_chunk_and_the_chunks_sent_while_it_waits(
        daemon, tmp_path, client):
    addresses = serve(daemon, tmp_path, "hold", "relay", pool_limit=1, pool_min=1, concurrency=1)
    wait_for(lambda: daemon.info("app")["pool"]["idle"] == 1, message="a ready worker")
    held = client(addresses["hold"]).request(b"")  # the only worker, until "release" exists
    wait_for(lambda: daemon.info("app")["jobs"]["running"] == 1, message="the worker held")
    call = client(addresses["relay"]).request(b"first", stream=True)
    call.write(b"second")
    call.write(b"third")
    call.end()
    wait_for(lambda: daemon.info("app")["queue"]["depth"] == 1, message="the streamed request queued")
    (tmp_path / "release").touch()
    assert held.read() == b"released"
    # Queued, it reaches the worker with everything sent so far as its body, the opening chunk first.
    assert b"".join(call) == b"got firstsecondthird"


def test_many_requests_interleave_on_one_connection(daemon, tmp_path, client):
    addresses = serve(daemon, tmp_path, "echo", "relay", pool_limit=1)
    echo, relay = client(addresses["echo"]), client(addresses["relay"])
    calls = [echo.request(str(i).encode()) for i in range(50)]
    streams = [relay.request(stream=True) for _ in range(5)]
    for i, stream in enumerate(streams):
        stream.write(b"x%d" % i)
        stream.end()
    assert [call.read() for call in reversed(calls)] == [str(i).encode() for i in reversed(range(50))]
    assert [stream.read() for stream in streams] == [b"got x%d" % i for i in range(5)]


def test_async_handlers(daemon, tmp_path, client):
    address = serve(daemon, tmp_path, "aecho")["aecho"]
    assert client(address).call(b"async") == b"async"


def one_worker(daemon, tmp_path, client):
    """An app whose one worker runs one "work" job at a time, already started. Returns ``job(name,
    wait=None, **options)``, which sends a job that waits for the file ``wait`` (if any), then logs its
    name in the file ``log``; ``log``; and ``flag``, a file for jobs to wait for."""
    address = serve(daemon, tmp_path, "work", pool_limit=1, concurrency=1)["work"]
    c = client(address)
    log, flag = tmp_path / "order.log", tmp_path / "go"

    def job(name, wait=None, **options):
        return c.request(json.dumps({"name": name, "log": str(log), "wait": wait}).encode(), **options)

    assert job("warm-up").read() == b"warm-up"
    return job, log, flag


def test_urgent_requests_jump_the_queue(daemon, tmp_path, client):
    job, log, flag = one_worker(daemon, tmp_path, client)
    blocker = job("A", wait=str(flag))
    wait_for(lambda: daemon.info("app")["jobs"]["running"] == 1, message="A to run")
    queued = [job("B"), job("C"), job("U", urgent=True)]
    wait_for(lambda: daemon.info("app")["queue"]["depth"] == 3, message="B, C, U to be queued")
    flag.touch()
    assert [call.read() for call in [blocker, *queued]] == [b"A", b"B", b"C", b"U"]
    assert log.read_text().split() == ["warm-up", "A", "U", "B", "C"]


def test_timeouts_and_deadlines_fail_with_504_queued_or_running(daemon, tmp_path, client):
    job, log, flag = one_worker(daemon, tmp_path, client)
    running = job("running", wait=str(flag), timeout=0.3)
    wait_for(lambda: daemon.info("app")["jobs"]["running"] == 1, message="the job to run")
    queued = job("queued", timeout=0.2)
    for call in (queued, running):
        with pytest.raises(JobError, match=r"^504 deadline exceeded \(0\.[23]\d* s after acceptance\)$"):
            call.read()
    assert daemon.info("app")["queue"]["depth"] == 0  # the expired job left the queue
    with pytest.raises(JobError, match="504 deadline exceeded before the request arrived"):
        job("too late", deadline=1.0).read()
    flag.touch()  # the running handler finishes; its late answer is dropped
    assert job("after").read() == b"after"
    assert log.read_text().split() == ["warm-up", "running", "after"]
    assert daemon.info("app")["tasks"]["work"]["counters"]["timed-out"] == 3


def test_flow_control_keeps_memory_bounded_for_a_large_streamed_request(daemon, tmp_path, client):
    address = serve(daemon, tmp_path, "count")["count"]
    c = client(address)
    assert c.call(b"warm") == b"4"
    memory = MemoryWatch(daemon.proc.pid, daemon.workers()[0])
    piece = b"x" * 65536
    total = 64 * 1024 * 1024
    call = c.request(stream=True)
    for _ in range(total // len(piece)):
        call.write(piece)  # waits for credit whenever the handler is behind
        memory.sample()
    call.end()
    assert call.read() == str(total).encode()
    memory.assert_grew_less_than(16 * 1024 * 1024, total)


def test_protocol_errors_are_answered_and_counted(daemon, tmp_path, zmq_context):
    addresses = serve(daemon, tmp_path, "echo", "hold")
    sock = dealer(zmq_context, addresses["echo"], 10_000)
    hold = dealer(zmq_context, addresses["hold"], 10_000)
    try:
        sock.send_multipart([msgpack.packb([native_protocol.REQUEST, 1, {}]), b"warm-up"])
        assert sock.recv_multipart() == [msgpack.packb([native_protocol.CHUNK, 1]), b"warm-up"]  # the worker is up
        assert msgpack.unpackb(sock.recv()) == [native_protocol.END, 1]
        sock.send_multipart([b"not msgpack \xc1"])  # no usable id: only counted
        sock.send_multipart([msgpack.packb([99, 7])])
        assert msgpack.unpackb(sock.recv()) == [native_protocol.ERROR, 7, 400, "unknown message type 99"]
        sock.send_multipart([msgpack.packb([native_protocol.REQUEST, 8, {"timeout": "soon"}])])
        assert msgpack.unpackb(sock.recv()) == [native_protocol.ERROR, 8, 400, "option timeout must be a number of seconds > 0"]
        # A client that ignores credit has its request failed rather than buffered.
        hold.send_multipart([msgpack.packb([native_protocol.OPEN, 9, {}]), b"x" * native_protocol.WINDOW])
        hold.send_multipart([msgpack.packb([native_protocol.CHUNK, 9]), b"x"])
        assert msgpack.unpackb(hold.recv()) == [native_protocol.ERROR, 9, 400, "flow control: 1 bytes sent beyond credit"]
    finally:
        (tmp_path / "release").touch()
        sock.close(0)
        hold.close(0)
    assert daemon.info("app")["tasks"]["echo"]["counters"]["protocol-errors"] == 3


def test_a_stream_the_client_abandons_times_out(daemon, tmp_path, zmq_context):
    address = endpoint()
    m = manifest(python_app(tmp_path, APP), {"relay": {"type": "native-server", "endpoint": address,
                                                       "idle-timeout": 0.3}})
    daemon.create("app", m)
    c = Client(address, context=zmq_context, timeout=10)
    try:
        assert c.call(b"warm-up") == b"got warm-up"  # the worker is up
        call = c.request(b"a", stream=True)
        chunks = iter(call)
        assert next(chunks) == b"got a"
        with pytest.raises(JobError, match="504 no request chunk for 0.3 s"):
            next(chunks)
    finally:
        c.close()


@pytest.mark.parametrize("task, error", [
    ({"endpoint": "tcp://127.0.0.1"}, "tasks.t.endpoint: expected a ZeroMQ endpoint"),
    ({}, "tasks.t.endpoint: expected a ZeroMQ endpoint such as tcp://127.0.0.1:9100, tcp://lo:9100 or "
         "ipc:///path, got None"),
    ({"endpoint": "tcp://127.0.0.1:1", "idle-timeout": 0}, "tasks.t.idle-timeout: expected a number > 0, got 0"),
    ({"endpoint": "tcp://127.0.0.1:1", "window": 5}, "tasks.t.window: unknown key (known: type, endpoint, idle-timeout)"),
])
def test_bad_configuration_is_rejected_naming_the_field(daemon, tmp_path, task, error):
    m = manifest(python_app(tmp_path, APP), {"t": {"type": "native-server", **task}})
    reply = daemon.request({"version": 2, "action": "create", "apps": {"app": m}})
    assert error in reply["app"]["error"]
