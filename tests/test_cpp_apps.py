"""What is particular to C++ apps: the documented build, the SDK's msgpack codec, a crash in native
code, and the worker host running in-process on a thread (what a thread backend will do)."""

import os
import random
import socket
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from cocaine.core import worker_protocol
from runtimes import (CONFORMANCE, CPP_BUILD_COMMAND, ScriptedEngine, StreamEnd, app_source, require_runtime,
                      serve_tasks)
from support import ROOT, endpoint, manifest
from vectors import frame, vectors

pytestmark = pytest.mark.timeout(120)

APP = r'''
#include <cocaine/app.hpp>
#include <chrono>
#include <stdexcept>
#include <string>

static void echo(cocaine::Request& request, cocaine::Response& response) { response.write(request.body()); }

static void segfault(cocaine::Request&, cocaine::Response&) {
    volatile int* nowhere = nullptr;
    *nowhere = 1;
}

// Burns CPU for the number of milliseconds in the body, without a single call into Python.
static void spin(cocaine::Request& request, cocaine::Response& response) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::stoi(request.body()));
    unsigned long long turns = 0;
    while (std::chrono::steady_clock::now() < until) ++turns;
    response.write(std::to_string(turns > 0));
}

static void meta(cocaine::Request& request, cocaine::Response& response) {
    const cocaine::Value* tags = request.meta().find("tags");
    response.write(tags->as_array().at(1).as_string() + " " + std::to_string(request.meta().find("ratio")->as_double()));
}

static void fails(cocaine::Request& request, cocaine::Response& response) {
    response.write("dropped: the error replaces the response");
    throw std::invalid_argument("bad input: " + request.body());
}

static void throws_int(cocaine::Request&, cocaine::Response&) { throw 42; }

COCAINE_APP({"echo", echo}, {"segfault", segfault}, {"spin", spin}, {"meta", meta}, {"fails", fails},
            {"throws_int", throws_int})
'''


@pytest.fixture(scope="module")
def cpp_app(tmp_path_factory):
    require_runtime("cpp")
    return app_source("cpp", tmp_path_factory.mktemp("cpp-app"), APP, "app.cpp")


def test_the_documented_build_command_is_the_one_tested():
    assert CPP_BUILD_COMMAND in (ROOT / "docs" / "cpp.md").read_text()
    assert CPP_BUILD_COMMAND in (CONFORMANCE / "cpp" / "app.cpp").read_text()


def test_a_segfault_loses_only_that_worker(daemon, cpp_app):
    crash, echo = endpoint(), endpoint()
    daemon.create("native", dict(manifest(cpp_app, {"segfault": {"type": "zeromq-server", "endpoint": crash},
                                                    "echo": {"type": "zeromq-server", "endpoint": echo}},
                                          pool_limit=1), type="cpp"))
    assert daemon.client(echo).call(b"before") == [b"ok", b"before"]
    assert daemon.client(crash).call(b"") == [b"error", b"500", b"worker was killed by SIGSEGV"]
    assert daemon.client(echo).call(b"after") == [b"ok", b"after"]
    assert daemon.info("native")["pool"]["spawned"] == 2
    assert "node" in daemon.info()  # the daemon itself is untouched


def test_nested_metadata_reaches_the_handler(zmq_context, tmp_path, cpp_app):
    engine = ScriptedEngine(zmq_context, tmp_path).start_worker("cpp", cpp_app)
    try:
        engine.hello()
        engine.send(worker_protocol.invoke(1, "meta", {"tags": ["a", "b"], "ratio": 0.5, "none": None}, None, True))
        assert engine.frames(2) == [worker_protocol.chunk(1, b"b 0.500000"), worker_protocol.end(1)]
    finally:
        engine.close()


def test_exceptions_become_error_502(zmq_context, tmp_path, cpp_app):
    engine = ScriptedEngine(zmq_context, tmp_path).start_worker("cpp", cpp_app)
    try:
        engine.hello()
        engine.send(worker_protocol.invoke(1, "fails", {}, b"\xffzz", True), worker_protocol.invoke(2, "throws_int", {}, None, True))
        chunk, error = engine.frames(2)
        assert worker_protocol.unpack(chunk)[0] == worker_protocol.CHUNK  # sent, then superseded by the error
        # what() may hold any bytes; the protocol's str must be UTF-8.
        assert error == worker_protocol.error(1, 502, "std::invalid_argument: bad input: ?zz")
        assert engine.frame() == worker_protocol.error(2, 502, "unknown exception")
    finally:
        engine.close()


def _corpus():
    rng = random.Random(7)
    values = [None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
              -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63, 0.0, -1.5, 1e300,
              "", "x" * 31, "x" * 32, "é" * 200, "y" * 70000, b"", b"\x00" * 255, b"\xff" * 256, b"z" * 70000,
              [], list(range(15)), list(range(16)), list(range(70000)), {}, {str(i): i for i in range(16)},
              {"nested": [{"a": [None, {"b": b"c"}]}]}, {1: "non-str key"}]
    for _ in range(200):
        values.append([rng.choice([rng.randint(-2**63, 2**64 - 1), rng.random(), rng.randbytes(rng.randint(0, 40)),
                                   "".join(chr(rng.randint(32, 0x2000)) for _ in range(rng.randint(0, 40)))])
                       for _ in range(rng.randint(0, 20))])
    return [msgpack.packb(v, use_bin_type=True) for v in values]


def test_the_sdk_msgpack_codec_round_trips_what_msgpack_python_writes(tmp_path):
    require_runtime("cpp")
    from cocaine.cpp import build

    program = tmp_path / "roundtrip"
    subprocess.run(["g++", "-std=c++17", "-O1", "-I", str(build.INCLUDE), str(ROOT / "tests/cpp/msgpack_roundtrip.cpp"),
                    "-o", str(program)], check=True, timeout=300)
    corpus = _corpus() + [msgpack.packb(1.5, use_single_float=True)]
    vectors_ = [v.frame for v in vectors().values()]
    broken = [b"", b"\x93\x01", b"\xc4\x05abc", b"\xdd\xff\xff\xff\xff", b"\xc1", b"\xd4\x01\x02", b"\x91" * 100 + b"\xc0",
              b"\x01\x02"]
    lines = "".join((data.hex() + "\n") for data in [*corpus, *vectors_, *broken])
    done = subprocess.run([str(program)], input=lines, capture_output=True, text=True, timeout=60, check=True)
    results = done.stdout.splitlines()
    assert results[:len(corpus) + len(vectors_)] == [data.hex() for data in [*corpus, *vectors_]]
    assert all(line.startswith("error: ") for line in results[len(corpus) + len(vectors_):])
    assert len(results) == len(corpus) + len(vectors_) + len(broken)


def test_the_sdk_msgpack_codec_tells_where_a_value_ends(tmp_path):
    """value_size splits a stream link (host/link.cpp): a value's size even with the next one behind
    it, 0 for every value cut short, an error for bytes that are not msgpack."""
    require_runtime("cpp")
    from cocaine.cpp import build

    program = tmp_path / "roundtrip"
    subprocess.run(["g++", "-std=c++17", "-O1", "-I", str(build.INCLUDE), str(ROOT / "tests/cpp/msgpack_roundtrip.cpp"),
                    "-o", str(program)], check=True, timeout=300)
    exts = [msgpack.packb(msgpack.ExtType(1, b"x" * n)) for n in (1, 2, 4, 8, 16, 3, 300, 70000)]
    values = [*_corpus(), *(v.frame for v in vectors().values()), *exts]
    cases = [(value + b"\x01", len(value)) for value in values]  # the next value follows
    for value in values:
        cuts = {*range(min(len(value), 12)), len(value) // 2, len(value) - 1}
        cases += [(value[:cut], 0) for cut in sorted(cuts)]
    lines = "".join(data.hex() + "\n" for data, _ in cases) + "93c101\n" + "c1\n"
    done = subprocess.run([str(program), "sizes"], input=lines, capture_output=True, text=True, timeout=60,
                          check=True)
    results = done.stdout.splitlines()
    assert results[:len(cases)] == [str(size) for _, size in cases]
    assert [line.startswith("error: ") for line in results[len(cases):]] == [True, True]


def test_a_thread_backend_worker_runs_cpp_without_the_gil(zmq_context, tmp_path, cpp_app):
    # What the thread backend does (CppLanguage's run_in_thread): the host serves on a thread of this
    # process, over inproc in this process's ZeroMQ context. ctypes releases the GIL for the call,
    # so while a handler burns CPU in C++ the Python thread below keeps running.
    from cocaine.cpp import inprocess

    engine = ScriptedEngine(zmq_context, tmp_path, endpoint="inproc://engine")
    status = []
    thread = threading.Thread(target=lambda: status.append(inprocess.serve(
        zmq_context, endpoint=engine.endpoint, worker_id="w1", path=cpp_app, heartbeat=5.0)))
    thread.start()
    try:
        assert engine.hello() == worker_protocol.hello(os.getpid())
        engine.send(frame("invoke"))
        assert engine.frames(2) == [frame("chunk"), frame("end")]
        engine.send(worker_protocol.invoke(2, "spin", {}, b"1000", True))
        started = last = time.monotonic()
        longest_gap = 0.0
        while not engine.sock.poll(0):  # the handler spins for a second; this loop must keep turning
            now = time.monotonic()
            longest_gap, last = max(longest_gap, now - last), now
            assert now - started < 20, "no reply from the spinning handler"
        assert time.monotonic() - started >= 0.9
        # Holding the GIL for the handler would stall this loop for the whole second.
        assert longest_gap < 0.75, f"the Python thread stalled for {longest_gap:.2f} s while C++ ran"
        assert engine.frames(2) == [worker_protocol.chunk(2, b"1"), worker_protocol.end(2)]
        engine.send(frame("terminate"))
        thread.join(10)
        assert status == [0]
    finally:
        engine.close()
        thread.join(10)


def test_a_thread_backend_worker_on_a_stream_link_needs_no_zeromq_and_closes_its_end(zmq_context, tmp_path, cpp_app):
    # What the thread backend does with a stream link: the worker thread owns descriptor N (the
    # pool's socketpair end, detached from its Python socket) and is given no ZeroMQ context.
    from cocaine.cpp import inprocess

    engine = ScriptedEngine(zmq_context, tmp_path)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    engine.link = StreamEnd(ours)
    fd = theirs.detach()
    status = []
    thread = threading.Thread(target=lambda: status.append(inprocess.serve(
        None, endpoint=f"fd:{fd}", worker_id="w1", path=cpp_app, heartbeat=5.0)))
    thread.start()
    try:
        assert engine.hello() == worker_protocol.hello(os.getpid())
        engine.send(frame("invoke"))
        assert engine.frames(2) == [frame("chunk"), frame("end")]
        engine.send(frame("terminate"))
        thread.join(10)
        assert status == [0]
        ours.settimeout(10)
        while ours.recv(1 << 16):  # until the end of stream: the worker closed the only other end
            pass
    finally:
        engine.close()
        thread.join(10)


def test_the_conformance_app_under_the_thread_backend(daemon, cpp_conformance_app, zmq_context):
    pubsub = endpoint()
    call = serve_tasks(daemon, "threads", "cpp", str(cpp_conformance_app), ["echo", "chunks", "fail", "upper"],
                       engine={"backend": "thread", "pool-limit": 2}, pubsub={"endpoint": pubsub},
                       extra_tasks={"tick": {"type": "recurring-timer", "interval": 100}})
    sub = zmq_context.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = 10_000
    sub.subscribe(b"tick result")
    sub.connect(pubsub)
    assert call("echo", b"in a thread") == [b"ok", b"in a thread"]
    assert call("chunks") == [b"ok", b"a", b"b", b"c"]
    assert call("upper", b"x") == [b"ok", b"X"]
    status, code, message = call("fail", b"zz")
    assert (status, code) == (b"error", b"502") and b"bad input: zz" in message
    topic, _, payload = sub.recv_multipart()
    assert payload.startswith(b"tick ")
    sub.close(0)
    assert daemon.info("threads")["pool"]["total"] >= 1
    assert daemon.workers() == []  # no worker processes: they are threads of the daemon
