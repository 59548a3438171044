"""Hardened parsing: malformed, truncated, oversized and type-confused input at every parser that
faces the network or a worker.

In process (hypothesis, many examples): the worker protocol's ``unpack``, the management request
parser and signature checks, manifests, and the Python worker's message handling.
Against a real daemon (hypothesis, fewer examples, one daemon for the whole run): management JSON
(versions 2 and 3) from DEALER sockets, zeromq-server framing, a worker that sends the engine
crafted protocol messages, frames over the size limit; meanwhile another client's requests must all
succeed, and the daemon must be alive, answering, and no bigger at the end. Then the native
protocol (native-server) and the raw socket driver, each checked by a valid request after every
attack.
"""

from __future__ import annotations

import json
import random
import threading
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from cocaine.cli.keys import Signer, generate_signing_key
from cocaine.core import worker_protocol
from cocaine.core.errors import CocaineError, ProtocolError
from cocaine.core.management import ACTIONS
from cocaine.core.management.auth import Guard, Refused
from cocaine.core.management.handler import RequestError, parse
from cocaine.core.management.users import Users
from cocaine.core.manifest import parse_manifest
from cocaine.core.plugins import Registry
from cocaine.core.storage.files import FilesStorage
from support import assert_no_reactor_errors, dealer, endpoint, manifest, python_app, wait_for

IN_PROCESS = settings(max_examples=300, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ON_THE_WIRE = settings(max_examples=150, deadline=None, database=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=True)
           | st.text(max_size=20) | st.binary(max_size=20))
json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
msgpack_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
# Protocol messages: mostly known types with right, wrong, missing or extra fields.
message_types = st.sampled_from(sorted(worker_protocol.NAMES)) | st.integers(-3, 12)
messages = st.builds(lambda kind, fields: [kind, *fields], message_types, st.lists(msgpack_values, max_size=7))


def request_objects(version):
    """Management requests that are nearly right: known actions and keys, type-confused values."""
    return st.fixed_dictionaries(
        {"version": version},
        optional={"action": st.sampled_from(ACTIONS) | json_values, "apps": json_values,
                  "users": json_values, "username": st.sampled_from(["alice", "nobody"]) | json_values,
                  "timestamp": st.just(time.time()) | json_values, "nonce": st.text(min_size=8) | json_values})


def encoded(requests):
    return requests.map(lambda r: json.dumps(r).encode())


management_frames = st.lists(
    encoded(request_objects(st.sampled_from([2, 3]) | json_values)) | st.binary(max_size=64)
    | encoded(json_values), min_size=0, max_size=3)


# -- in process -----------------------------------------------------------------------------------
@IN_PROCESS
@given(st.binary(max_size=200) | messages.map(worker_protocol.pack))
@example(b"\x92\x0b\x90")  # [11, []]: a handback, whose field is an array of job ids
def test_unpack_returns_a_checked_message_or_raises_protocol_error(frame):
    try:
        message = worker_protocol.unpack(frame)
    except ProtocolError:
        return
    assert type(message[0]) is int
    for i, expected in enumerate(worker_protocol.SHAPES.get(message[0], ()), 1):
        value = message[i]
        if expected == "int":
            assert type(value) is int
        elif expected == "ints":  # a handback's job ids
            assert type(value) is list and all(type(v) is int for v in value)
        else:
            assert isinstance(value, expected)


@pytest.fixture
def guard(tmp_path):
    storage = FilesStorage(str(tmp_path / "storage"), "default")
    private, public = generate_signing_key(str(tmp_path / "alice"))
    Users(storage).add("alice", {"public-key": open(public).read()})
    return Guard(Users(storage), require_signatures=True), Signer.load("alice", private)


@IN_PROCESS
@given(frames=management_frames, sign=st.booleans())
def test_management_parser_and_guard_only_refuse(guard, frames, sign):
    checker, alice = guard
    if sign and frames:  # a valid signature of whatever the first frame is
        frames = [frames[0], alice.sign(frames[0])]
    try:
        request = parse(frames)
        user = checker.admit(request, frames, "fuzz")
    except (RequestError, Refused):
        return
    assert request["version"] == 3 and user.name == "alice" and request["action"] in ACTIONS


@IN_PROCESS
@given(st.fixed_dictionaries({}, optional={
    "type": st.just("python") | json_values, "args": st.just("/srv/app.py") | json_values,
    "version": json_values, "engine": st.dictionaries(st.sampled_from(
        ["backend", "pool-limit", "queue-limit", "concurrency", "heartbeat-timeout", "idle-timeout",
         "request-timeout", "pool-min", "bogus"]), json_values) | json_values,
    "pubsub": st.fixed_dictionaries({"endpoint": st.just("tcp://lo:1") | json_values}) | json_values,
    "tasks": st.dictionaries(st.text(max_size=8), st.fixed_dictionaries(
        {"type": st.sampled_from(["zeromq-server", "recurring-timer", "nope"]) | json_values},
        optional={"endpoint": st.just("tcp://lo:1") | json_values, "interval": json_values}) | json_values,
        max_size=3) | json_values}) | json_values)
def test_manifests_are_accepted_or_refused_with_a_config_error(raw):
    registry = Registry.load()
    try:
        parse_manifest("fuzz", raw, registry)
    except CocaineError as e:
        assert str(e).startswith("app 'fuzz': ")


@pytest.fixture
def python_worker(tmp_path):
    from cocaine.python.link import ZeroMQLink
    from cocaine.python.worker import Handlers, PythonWorker, load_module

    module = load_module(python_app(tmp_path, "def echo(request):\n    return request.body\n"
                                              "def stream(request):\n    yield b'a'\n    yield 'b'\n"
                                              "def fail(request):\n    raise ValueError('no')\n"), "fuzz.1")
    context = zmq.Context()
    engine, worker = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    engine.bind("inproc://fuzz-worker")
    worker.connect("inproc://fuzz-worker")
    yield PythonWorker(ZeroMQLink(worker), Handlers(module), heartbeat=5.0), engine
    engine.close(0)
    worker.close(0)
    context.term()


@IN_PROCESS
@given(st.lists(st.binary(max_size=40) | messages.map(worker_protocol.pack)
                | st.builds(lambda job, task, meta, body: worker_protocol.invoke(job, task, meta, body, True),
                            st.integers(0, 2**32), st.sampled_from(["echo", "stream", "fail", "nope"]),
                            st.dictionaries(st.sampled_from(["deadline", "x"]), msgpack_values, max_size=2),
                            st.binary(max_size=20) | st.none()), max_size=6))
def test_the_python_worker_answers_every_invoke_and_survives_the_rest(python_worker, frames):
    worker, engine = python_worker
    invoked = []
    for frame in frames:
        try:
            message = worker_protocol.unpack(frame)
        except ProtocolError:
            continue  # the worker's loop drops these; see test_worker_loop_drops_bad_messages
        if message[0] == worker_protocol.INVOKE:
            invoked.append(message[1])
        if not worker.handle(message):
            break  # terminate
    worker.flush()
    answered = []
    while engine.poll(0):
        for frame in engine.recv_multipart():
            reply = worker_protocol.unpack(frame)
            if reply[0] in (worker_protocol.END, worker_protocol.ERROR):
                answered.append(reply[1])
    assert answered == invoked  # exactly one end or error per invoke, in order


def test_worker_loop_drops_bad_messages(python_worker):
    worker, engine = python_worker
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    engine.rcvtimeo = 10_000
    assert worker_protocol.unpack(engine.recv())[0] == worker_protocol.HELLO
    engine.send_multipart([b"\xc1", worker_protocol.pack([worker_protocol.INVOKE, 1, "echo"]),
                           worker_protocol.pack([worker_protocol.INVOKE, 2, "echo", {}, b"hi", True, "extra"]),
                           worker_protocol.terminate("done")])
    runner.join(10)
    assert not runner.is_alive()
    replies = [worker_protocol.unpack(frame) for frame in engine.recv_multipart()]
    assert [r[0] for r in replies] == [worker_protocol.LOG, worker_protocol.LOG, worker_protocol.CHUNK, worker_protocol.END]
    assert replies[0][2].startswith("dropped a bad message: frame is not valid msgpack")
    assert replies[1][2] == "dropped a bad message: invoke: expected 5 fields, got 2"
    assert replies[2:] == [[worker_protocol.CHUNK, 2, b"hi"], [worker_protocol.END, 2]]


# -- against a real daemon ------------------------------------------------------------------------
EVIL = '''
import inspect
import msgpack


def _worker_link():
    """This worker's own link to the engine, found up the stack: the app turns into a fake worker."""
    frame = inspect.currentframe()
    while frame is not None:
        for value in frame.f_locals.values():
            if type(value).__name__ in ("StreamLink", "ZeroMQLink"):
                return value
        frame = frame.f_back
    raise RuntimeError("no worker link up the stack")


def _cut_short(data):
    """Whether ``data`` ends inside a msgpack value: on a stream link the engine would wait for
    the rest, until heartbeat-timeout (tests/test_stream_links.py covers that, slowly)."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)  # as the engine's StreamDecoder
    unpacker.feed(data)
    end = 0  # where the last whole value ends (tell() alone counts a container's started header)
    try:
        for _ in unpacker:
            end = unpacker.tell()
    except Exception:
        return False  # not msgpack: the engine breaks the link at once
    return end < len(data)


def evil(request):
    link = _worker_link()
    frames = []
    for template in msgpack.unpackb(request.body, raw=False):
        if isinstance(template, list):
            template = [request.id if item == "$job" else item for item in template]
            frames.append(msgpack.packb(template, use_bin_type=True))
        elif type(link).__name__ == "StreamLink" and _cut_short(bytes(template)):
            frames.append(msgpack.packb(bytes(template)))  # still no message: dropped
        else:
            frames.append(bytes(template))
    if frames:
        link.send_all(frames)
    return b"survived"
'''
ECHO = "def echo(request):\n    return request.body\n"
LIMIT = 64 << 10  # --max-message-size for the fuzzed daemon


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class Bystander:
    """Another client using the daemon during the attack: management info and an echo app, each
    request with its own deadline. Every request must succeed."""

    def __init__(self, daemon, echo_address: str) -> None:
        self.daemon, self.echo_address = daemon, echo_address
        self.done = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        management = self.daemon.client(timeout=10)
        echo = self.daemon.client(self.echo_address, timeout=10)
        try:
            while not self.stop.is_set():
                try:
                    if "node" not in management.call_json({"version": 2, "action": "info"}):
                        self.failures.append("info without node")
                    body = str(self.done).encode()
                    if echo.call(body) != [b"ok", body]:
                        self.failures.append("wrong echo")
                except zmq.Again:
                    self.failures.append("timed out")
                    return
                self.done += 1
        finally:
            management.close()
            echo.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def assert_dropped(context, address: str, frames: list[bytes]) -> None:
    """A message over the limit gets the peer disconnected (seen on its monitor), nothing else."""
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(address)
        sock.send_multipart(frames)
        events = []
        while zmq.EVENT_DISCONNECTED not in events:
            assert monitor.poll(10_000), f"not disconnected from {address} within 10 s ({events})"
            events.append(recv_monitor_message(monitor)["event"])
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


@pytest.fixture
def target(make_daemon, tmp_path):
    daemon = make_daemon("--max-message-size", str(LIMIT)).start()
    evil_address, echo_address, zmq_address = endpoint(), endpoint(), endpoint()
    daemon.create("evil", manifest(python_app(tmp_path, EVIL, "evil.py"),
                                   {"evil": {"type": "zeromq-server", "endpoint": evil_address}}))
    daemon.create("echo", manifest(python_app(tmp_path, ECHO + "fuzzed = echo\n", "echo.py"),
                                   {"echo": {"type": "zeromq-server", "endpoint": echo_address},
                                    "fuzzed": {"type": "zeromq-server", "endpoint": zmq_address}}))
    daemon.addresses = {"evil": evil_address, "echo": echo_address, "fuzzed": zmq_address}
    return daemon


crafted_fields = st.lists(
    st.just("$job") | st.integers(-2**63, 2**63 - 1) | st.text(max_size=10) | st.binary(max_size=10) | st.none()
    | st.booleans() | st.floats() | st.dictionaries(st.text(max_size=3), st.integers(-2**63, 2**63 - 1), max_size=2),
    max_size=5)
# Raw bytes, any message, and messages about the running job ("$job" becomes its id in the worker).
templates = st.lists(st.binary(max_size=30)
                     | st.builds(lambda kind, fields: [kind, *fields], message_types, crafted_fields)
                     | st.builds(lambda kind, fields: [kind, "$job", *fields],
                                 st.sampled_from([worker_protocol.CHUNK, worker_protocol.END, worker_protocol.ERROR]), crafted_fields),
                     max_size=6)
fuzzed_frames = st.lists(st.binary(max_size=40) | st.just(b""), min_size=1, max_size=6)


@pytest.mark.timeout(300)
def test_the_daemon_survives_fuzzing_serves_others_and_stays_bounded(target, zmq_context):
    pid = target.proc.pid
    addresses = target.addresses
    management = dealer(zmq_context, target.management, 10_000)
    fuzzed = dealer(zmq_context, addresses["fuzzed"], 10_000)
    evil = target.client(addresses["evil"], timeout=20)

    @ON_THE_WIRE
    @given(management_frames.filter(bool))
    def management_answers_every_message(frames):
        management.send_multipart(frames)
        reply = management.recv_multipart()
        # Without an empty delimiter the whole message is the request; the reply comes after the
        # envelope the DEALER sent, if any.
        answer = json.loads(reply[-1])
        assert isinstance(answer, dict)

    @ON_THE_WIRE
    @given(fuzzed_frames)
    def zeromq_server_answers_every_message(frames):
        fuzzed.send_multipart(frames)
        split = frames.index(b"") + 1 if b"" in frames else 0
        assert fuzzed.recv_multipart() == [*frames[:split], b"ok", b"".join(frames[split:])]

    @ON_THE_WIRE
    @given(templates)
    def engine_survives_a_lying_worker(crafted):
        status, *_ = evil.call(msgpack.packb(crafted, use_bin_type=True))
        assert status in (b"ok", b"error")

    with Bystander(target, addresses["echo"]) as bystander:
        management_answers_every_message()
        zeromq_server_answers_every_message()
        engine_survives_a_lying_worker()
        assert_dropped(zmq_context, target.management, [b"x" * (LIMIT + 1)])
        assert_dropped(zmq_context, addresses["fuzzed"], [b"", b"y" * (LIMIT + 1)])

        # A long seeded run for memory: warm up, measure, run again, measure.
        rng = random.Random(6)

        def burst(n: int) -> None:
            for _ in range(n):
                garbage = [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
                management.send_multipart(garbage)
                management.recv_multipart()
                fuzzed.send_multipart(garbage)
                fuzzed.recv_multipart()

        burst(1000)
        before = rss_kib(pid)
        started = time.monotonic()
        burst(4000)
        elapsed = time.monotonic() - started
        after = rss_kib(pid)
        assert bystander.done > 0

    assert bystander.failures == [], bystander.failures
    print(f"fuzz: 4000 garbage messages to management and to a zeromq-server in {elapsed:.1f} s; "
          f"daemon RSS {before} KiB -> {after} KiB; bystander made {bystander.done} round trips")
    assert after - before < 8 << 10, f"RSS grew from {before} KiB to {after} KiB"
    for sock in (management, fuzzed):
        sock.close(0)
    # Alive and answering; the lying worker's app is still served.
    assert "node" in target.info()
    assert evil.call(msgpack.packb([])) == [b"ok", b"survived"]
    wait_for(lambda: target.proc.poll() is None, message="the daemon to be alive")


# -- the native protocol and the raw socket driver ------------------------------------------------
native_headers = (st.binary(max_size=30) | st.builds(
    lambda kind, fields: worker_protocol.pack([kind, *fields]), st.integers(-2, 9),
    st.lists(st.integers(-2**63, 2**64 - 1) | st.text(max_size=130) | st.binary(max_size=130) | st.none()
             | st.booleans() | st.floats() | st.dictionaries(st.sampled_from(["urgent", "timeout", "deadline", "x"]),
                                                           st.booleans() | st.floats() | st.text(max_size=5)),
             max_size=4)))
native_messages = st.lists(st.tuples(native_headers, st.lists(st.binary(max_size=40), max_size=3)),
                           min_size=1, max_size=4)
# zeromq-server with "replies": "stream": id frames, delimiters, verbs and credits in any order.
stream_frames = st.sampled_from([b"", b"1", b"request", b"credit", b"cancel", b"65536", b"-1"]) | st.binary(max_size=20)
stream_messages = st.lists(st.lists(stream_frames, min_size=1, max_size=6), min_size=1, max_size=4)


@pytest.mark.timeout(300)
def test_native_server_and_raw_socket_survive_fuzzing(make_daemon, zmq_context, tmp_path):
    import socket

    from cocaine.drivers.native_client import Client
    from cocaine.drivers.zeromq_client import StreamClient
    from support import free_port

    daemon = make_daemon("--max-message-size", str(LIMIT)).start()
    native, port, streamed = endpoint(), free_port(), endpoint()
    source = "def echo(request):\n    return b''.join(request)\nraw = streamed = echo\n"
    daemon.create("echo", manifest(python_app(tmp_path, source), {
        "echo": {"type": "native-server", "endpoint": native},
        "raw": {"type": "raw-socket-server", "endpoint": f"127.0.0.1:{port}"},
        "streamed": {"type": "zeromq-server", "endpoint": streamed, "replies": "stream"}}))
    client = Client(native, context=zmq_context, timeout=10)
    attacker = dealer(zmq_context, native, 10_000)
    stream_client = StreamClient(streamed, context=zmq_context, timeout=10)
    stream_attacker = dealer(zmq_context, streamed, 10_000)

    @ON_THE_WIRE
    @given(native_messages)
    def native_server_survives(garbage):
        for header, data in garbage:
            attacker.send_multipart([header, *data])
        assert client.call(b"still there") == b"still there"  # the driver serves on, in order
        while attacker.poll(0):
            attacker.recv_multipart()  # whatever it answered (errors for refused requests)

    @ON_THE_WIRE
    @given(stream_messages)
    def streamed_zeromq_server_survives(garbage):
        for frames in garbage:
            stream_attacker.send_multipart(frames)
        assert stream_client.call(b"still there") == b"still there"
        while stream_attacker.poll(0):
            stream_attacker.recv_multipart()  # its chunks, answers and errors

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.binary(max_size=300), st.sampled_from(["shutdown", "close", "reset"]))
    def raw_socket_survives(garbage, ending):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(garbage)
        if ending == "reset":  # RST instead of FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif ending == "shutdown":
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(4096):
                received += chunk
            assert received == garbage  # the echo handler answers the whole stream
        conn.close()

    native_server_survives()
    streamed_zeromq_server_survives()
    raw_socket_survives()
    assert_dropped(zmq_context, native, [b"h" * (LIMIT + 1)])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"ping")
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(100) == b"ping"
    assert client.call(b"last") == b"last"
    assert stream_client.call(b"last") == b"last"
    client.close()
    stream_client.close()
    attacker.close(0)
    stream_attacker.close(0)
    assert "node" in daemon.info()
    assert_no_reactor_errors(daemon)
