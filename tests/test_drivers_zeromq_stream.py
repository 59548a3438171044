"""``zeromq-server`` with ``"replies": "stream"`` (docs/drivers.md, "Streamed replies"), end to end
with real DEALER sockets: chunk by chunk replies under the client's credit, interleaved requests,
errors, the idle timeout, a client gone, the app stopping, and every error message the page quotes,
word for word. The memory bound over a huge response is in tests/test_backpressure.py."""

import re

import pytest
import zmq

from cocaine.core.errors import JobError
from cocaine.core.plugin_api import RESPONSE_WINDOW
from cocaine.drivers.zeromq_client import StreamClient
from support import APP_WAIT_FOR_FILE, ROOT, endpoint, manifest, python_app, wait_for

DOC = (ROOT / "docs" / "drivers.md").read_text().split("### Streamed replies", 1)[1].split("\n## ", 1)[0]

APP = APP_WAIT_FOR_FILE + '''
import os

RELEASE = os.path.join(os.path.dirname(__file__), "release")

def numbered(request):
    # COUNT chunks of SIZE bytes, each saying its number, as fast as it can.
    count, size = map(int, request.text().split())
    for i in range(count):
        yield (b"%08d" % i) * (size // 8)

idle = whole = numbered

def fails_at_once(request):
    raise ValueError("refused " + request.text())

def fails_after(request):
    yield b"a"
    yield b"b"
    raise ValueError("after two chunks")

def held(request):
    # One chunk, then waits until the test module is done.
    yield b"first"
    wait_for_file(RELEASE)
'''
CHUNK = 65536


def numbered(i: int, size: int = CHUNK) -> bytes:
    return (b"%08d" % i) * (size // 8)


@pytest.fixture(scope="module")
def tasks(module_daemon, tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    addresses = {task: endpoint() for task in ("numbered", "idle", "whole", "fails_at_once", "fails_after", "held")}
    config = {task: {"type": "zeromq-server", "endpoint": address, "replies": "stream"}
              for task, address in addresses.items()}
    config["idle"]["idle-timeout"] = 0.3
    config["whole"] = {"type": "zeromq-server", "endpoint": addresses["whole"]}
    module_daemon.create("streamed", manifest(python_app(folder, APP), config, pool_limit=8))
    yield addresses
    (folder / "release").touch()  # the held handlers return
    module_daemon.request({"version": 2, "action": "delete", "apps": ["streamed"]})


def counters(daemon, task: str) -> dict:
    return daemon.info("streamed")["tasks"][task]["counters"]


class Dealer:
    """A raw DEALER on a task: messages ``[id, b"", verb, ...]`` out and in."""

    def __init__(self, context: zmq.Context, address: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(address)

    def send(self, request_id: bytes, *frames: bytes) -> None:
        self.sock.send_multipart([request_id, b"", *frames])

    def recv(self, timeout: float = 15.0) -> list[bytes]:
        assert self.sock.poll(timeout * 1000), f"no message within {timeout} s"
        return self.sock.recv_multipart()

    def error(self, request_id: bytes) -> str:
        """``code message`` of the request's final answer, its chunks skipped; fails on an ``ok``."""
        while True:
            frames = self.recv()
            if frames[0] == request_id and frames[2] != b"chunk":
                assert frames[2] == b"error" and len(frames) == 5, frames
                return f"{int(frames[3])} {frames[4].decode()}"

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def dealer(zmq_context):
    opened = []

    def connect(address: str) -> Dealer:
        opened.append(Dealer(zmq_context, address))
        return opened[-1]

    yield connect
    for d in opened:
        d.close()


def test_chunks_come_in_order_and_the_handler_waits_for_credit(module_daemon, tasks, dealer):
    d = dealer(tasks["numbered"])
    d.send(b"r1", b"request", b"0 8")  # no chunk: the worker is up
    assert d.recv() == [b"r1", b"", b"ok"]
    sent_before = counters(module_daemon, "numbered")["bytes-out"]
    count = 40  # ten response windows
    d.send(b"r1", b"request", b"%d %d" % (count, CHUNK))
    window = RESPONSE_WINDOW // CHUNK
    held = [d.recv() for _ in range(window)]
    # The worker's credit is spent: nothing more is sent until the client credits.
    assert counters(module_daemon, "numbered")["bytes-out"] - sent_before == RESPONSE_WINDOW
    assert held == [[b"r1", b"", b"chunk", numbered(i)] for i in range(window)]
    for i in range(window, count):
        d.send(b"r1", b"credit", b"%d" % CHUNK)
        assert d.recv() == [b"r1", b"", b"chunk", numbered(i)]
    # The handler's end is found by asking it for more: the final answer waits for credit too.
    d.send(b"r1", b"credit", b"%d" % RESPONSE_WINDOW)
    assert d.recv() == [b"r1", b"", b"ok"]
    assert counters(module_daemon, "numbered")["bytes-out"] - sent_before == count * CHUNK


def test_one_dealer_interleaves_requests_each_on_its_envelope(tasks, zmq_context):
    with StreamClient(tasks["numbered"], context=zmq_context, timeout=15) as client:
        sizes = {CHUNK: 30, 4096: 200, 8: 3}
        calls = {size: iter(client.request(b"%d %d" % (count, size))) for size, count in sizes.items()}
        got = {size: [] for size in sizes}
        while calls:
            for size, chunks in list(calls.items()):  # one chunk of each in turn
                chunk = next(chunks, None)
                if chunk is None:
                    del calls[size]
                else:
                    got[size].append(chunk)
        assert got == {size: [numbered(i, size) for i in range(count)] for size, count in sizes.items()}
        assert client.call(b"0 8") == b""


def test_an_envelope_of_several_id_frames_names_the_request(tasks, dealer):
    d = dealer(tasks["numbered"])
    d.sock.send_multipart([b"job", b"1", b"", b"request", b"1 8"])
    d.sock.send_multipart([b"job", b"2", b"", b"request", b"2 8"])
    replies = [d.recv() for _ in range(5)]
    assert [r for r in replies if r[1] == b"1"] == [[b"job", b"1", b"", b"chunk", numbered(0, 8)],
                                                    [b"job", b"1", b"", b"ok"]]
    assert [r for r in replies if r[1] == b"2"] == [[b"job", b"2", b"", b"chunk", numbered(0, 8)],
                                                    [b"job", b"2", b"", b"chunk", numbered(1, 8)],
                                                    [b"job", b"2", b"", b"ok"]]


def test_the_client_raises_a_failed_request_and_cancels(tasks, zmq_context):
    with StreamClient(tasks["fails_after"], context=zmq_context, timeout=15) as client:
        chunks = iter(client.request())
        assert [next(chunks), next(chunks)] == [b"a", b"b"]
        with pytest.raises(JobError, match="^502 ValueError: after two chunks$"):
            next(chunks)
    with StreamClient(tasks["held"], context=zmq_context, timeout=15) as client:
        call = client.request()
        assert next(iter(call)) == b"first"
        call.cancel()
        with pytest.raises(JobError, match="^503 cancelled by the client$"):
            list(call)


def test_handler_errors_before_and_after_chunks_are_the_one_final_answer(tasks, dealer):
    before, after = dealer(tasks["fails_at_once"]), dealer(tasks["fails_after"])
    before.send(b"x", b"request", b"no")
    assert before.recv() == [b"x", b"", b"error", b"502", b"ValueError: refused no"]
    after.send(b"y", b"request")
    assert [after.recv() for _ in range(3)] == [[b"y", b"", b"chunk", b"a"], [b"y", b"", b"chunk", b"b"],
                                                [b"y", b"", b"error", b"502", b"ValueError: after two chunks"]]
    # Nothing more comes for them: the next message on each socket is the next request's.
    for d in (before, after):
        d.send(b"z", b"request", b"")
        assert d.recv()[0] == b"z"


def test_a_request_without_credit_times_out_and_a_gone_client_is_let_go(module_daemon, tasks, dealer):
    before = counters(module_daemon, "idle")
    d = dealer(tasks["idle"])
    d.send(b"1", b"request", b"1000 65536")  # and never credits what it gets
    assert d.error(b"1") == "504 no response credit for 0.3 s"
    gone = dealer(tasks["idle"])
    gone.send(b"2", b"request", b"1000 65536")
    assert gone.recv()[2] == b"chunk"
    gone.close()
    # Its job is let go: by the next message that cannot reach it, or by the idle timeout on a
    # response waiting for credit that never comes (whose answer then cannot reach it either).
    wait_for(lambda: counters(module_daemon, "idle")["open"] == 0, message="the gone client's request to end")
    after = counters(module_daemon, "idle")
    assert after["unreachable"] - before["unreachable"] in (0, 1)
    assert after["timed-out"] - before["timed-out"] + after["unreachable"] - before["unreachable"] >= 2
    assert after["open"] == 0
    assert after["bytes-out"] - before["bytes-out"] <= 2 * (RESPONSE_WINDOW + CHUNK)


def test_the_default_replies_are_one_message_for_a_req_client(tasks, zmq_context):
    req = zmq_context.socket(zmq.REQ)
    req.linger = 0
    req.connect(tasks["whole"])
    try:
        req.send(b"3 8")
        assert req.poll(15_000)
        assert req.recv_multipart() == [b"ok", numbered(0, 8), numbered(1, 8), numbered(2, 8)]
    finally:
        req.close(0)


# -- every error message the page quotes ---------------------------------------------------------------
def no_verb(d, tasks):
    d.send(b"1")
    return d.error(b"1")


def unknown_verb(d, tasks):
    d.send(b"1", b"hello\xff")
    return d.error(b"1")


def envelope_in_use(d, tasks):
    d.send(b"1", b"request")
    assert d.recv() == [b"1", b"", b"chunk", b"first"]
    d.send(b"1", b"request")
    return d.error(b"1")


def credit_without_count(d, tasks):
    d.send(b"1", b"credit")
    return d.error(b"1")


def credit_not_digits(d, tasks):
    d.send(b"1", b"credit", b"-5")
    return d.error(b"1")


def credit_beyond_what_was_sent(d, tasks):
    d.send(b"1", b"request")
    assert d.recv() == [b"1", b"", b"chunk", b"first"]
    d.send(b"1", b"credit", b"6")
    return d.error(b"1")


def cancel_with_frames(d, tasks):
    d.send(b"1", b"cancel", b"now")
    return d.error(b"1")


def cancelled(d, tasks):
    d.send(b"1", b"request")
    assert d.recv() == [b"1", b"", b"chunk", b"first"]
    d.send(b"1", b"cancel")
    return d.error(b"1")


def no_credit(d, tasks):
    d.send(b"1", b"request", b"100 65536")
    return d.error(b"1")


# documented message -> (task, scenario, the message it gives)
SCENARIOS = {
    "400 no verb frame after the envelope (expected request, credit or cancel)":
        ("numbered", no_verb, "400 no verb frame after the envelope (expected request, credit or cancel)"),
    "400 verb frame: unknown verb 'V' (expected request, credit or cancel)":
        ("numbered", unknown_verb, "400 verb frame: unknown verb 'hello\\xff' (expected request, credit or cancel)"),
    "400 request: the envelope is in use by a request in progress":
        ("held", envelope_in_use, "400 request: the envelope is in use by a request in progress"),
    "400 credit: expected one byte-count frame after the verb, got N frames":
        ("numbered", credit_without_count, "400 credit: expected one byte-count frame after the verb, got 0 frames"),
    "400 credit: the byte-count frame must be 1 to 15 ASCII digits, got 'V'":
        ("numbered", credit_not_digits, "400 credit: the byte-count frame must be 1 to 15 ASCII digits, got '-5'"),
    "400 credit: N bytes is more than the N bytes sent and not credited":
        ("held", credit_beyond_what_was_sent, "400 credit: 6 bytes is more than the 5 bytes sent and not credited"),
    "400 cancel: expected no frame after the verb, got N":
        ("numbered", cancel_with_frames, "400 cancel: expected no frame after the verb, got 1"),
    "503 cancelled by the client": ("held", cancelled, "503 cancelled by the client"),
    "504 no response credit for S s": ("idle", no_credit, "504 no response credit for 0.3 s"),
}

PLACEHOLDERS = {"N": r"\d+", "S": r"\d+(?:\.\d+)?", "V": r".+"}


def test_every_quoted_message_has_a_scenario():
    quoted = set(re.findall(r"`(\d{3} [^`]+)`", DOC)) - {"503 app 'NAME' stopped before the job finished"}
    assert quoted == set(SCENARIOS)


@pytest.mark.parametrize("template", SCENARIOS)
def test_the_daemon_sends_the_documented_message(module_daemon, tasks, dealer, template):
    task, scenario, expected = SCENARIOS[template]
    errors_before = counters(module_daemon, task)["protocol-errors"]
    actual = scenario(dealer(tasks[task]), tasks)
    assert actual == expected
    pattern = re.sub(r"\b(N|S|V)\b", lambda m: PLACEHOLDERS[m[1]], re.escape(template))
    assert re.fullmatch(pattern, actual), f"{actual!r} does not read as the documented {template!r}"
    if actual.startswith("400 "):
        assert counters(module_daemon, task)["protocol-errors"] == errors_before + 1


def test_stopping_the_app_answers_a_response_waiting_for_credit(make_daemon, tmp_path, zmq_context):
    daemon = make_daemon("--stop-timeout", "0.5").start()
    address = endpoint()
    daemon.create("app", manifest(python_app(tmp_path, APP), {
        "numbered": {"type": "zeromq-server", "endpoint": address, "replies": "stream"}}))
    d = Dealer(zmq_context, address)
    try:
        d.send(b"1", b"request", b"1000 65536")
        assert d.recv()[2] == b"chunk"
        assert daemon.request({"version": 2, "action": "delete", "apps": ["app"]})["app"] == {"deleted": True}
        assert d.error(b"1") == "503 app 'app' stopped before the job finished"
    finally:
        d.close()


@pytest.mark.parametrize("task, error", [
    ({"replies": "chunks"}, "tasks.t.replies: expected one of 'whole', 'stream', got 'chunks'"),
    ({"idle-timeout": 5}, 'tasks.t.idle-timeout: applies only with "replies": "stream"'),
    ({"replies": "stream", "idle-timeout": 0}, "tasks.t.idle-timeout: expected a number > 0, got 0"),
])
def test_bad_configuration_is_rejected_naming_the_field(module_daemon, tmp_path, task, error):
    m = manifest(python_app(tmp_path, APP), {"t": {"type": "zeromq-server", "endpoint": endpoint(), **task}})
    reply = module_daemon.request({"version": 2, "action": "create", "apps": {"bad": m}})
    assert error in reply["bad"]["error"]
