"""Every error message docs/native-protocol.md quotes, produced by a running daemon, word for word.

The documented messages are read from the page itself (its `code message` quotes and the errors of
its example), so a message quoted there without a scenario here fails, and so does a scenario
whose message the page does not quote.
"""

import re

import msgpack
import pytest
import zmq

from cocaine.drivers import native_protocol as native
from support import APP_WAIT_FOR_FILE, ROOT, endpoint, manifest, python_app

DOC = (ROOT / "docs" / "native-protocol.md").read_text()

APP = APP_WAIT_FOR_FILE + '''
import os

RELEASE = os.path.join(os.path.dirname(__file__), "release")

def fails(request):
    raise ValueError(request.text())

def relay(request):
    for chunk in request:
        yield b"got " + chunk

idle = relay

def flood(request):
    # Far more than a response window, as fast as it can: paced by the client's credit.
    for _ in range(1024):
        yield b"x" * 65536

def hold(request):
    # Never reads its request; returns once the test module is done.
    wait_for_file(RELEASE)
    return b"released"
'''

# Placeholders of the page's messages: N an integer, S seconds, ID a request id, TYPE a message type.
PLACEHOLDERS = {"N": r"\d+", "S": r"\d+(?:\.\d+)?", "ID": r".+", "TYPE": r".+"}


def documented() -> set[str]:
    quoted = set(re.findall(r"`(\d{3} [^`]+)`", DOC))
    examples = {f"{code} {message}" for code, message in re.findall(r'\[6, \d+, (\d{3}), "([^"]*)"\]', DOC)}
    return quoted | examples


def pattern(template: str) -> re.Pattern:
    escaped = re.escape(template)
    return re.compile(re.sub(r"\b(N|S|ID|TYPE)\b", lambda m: PLACEHOLDERS[m[1]], escaped))


@pytest.fixture(scope="module")
def tasks(module_daemon, tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    addresses = {task: endpoint() for task in ("fails", "relay", "idle", "hold", "flood")}
    config = {task: {"type": "native-server", "endpoint": address} for task, address in addresses.items()}
    config["idle"]["idle-timeout"] = config["flood"]["idle-timeout"] = 0.3
    module_daemon.create("messages", manifest(python_app(folder, APP), config, pool_limit=8))
    yield addresses
    (folder / "release").touch()  # the held handlers return
    module_daemon.request({"version": 2, "action": "delete", "apps": ["messages"]})


class Connection:
    """A raw DEALER on a task: protocol messages out, the error of one request back."""

    def __init__(self, context: zmq.Context, address: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(address)

    def send(self, header: list, *data: bytes) -> None:
        self.sock.send_multipart([msgpack.packb(header), *data])

    def error(self, request_id, timeout: float = 15.0) -> str:
        """``code message`` of the request's error; its other messages (chunks, credit) are skipped."""
        while True:
            assert self.sock.poll(timeout * 1000), f"no error for request {request_id!r} within {timeout} s"
            kind, rid, *rest = msgpack.unpackb(self.sock.recv_multipart()[0])
            assert kind in (native.CHUNK, native.CREDIT, native.ERROR), (kind, rid, rest)
            if kind == native.ERROR and rid == request_id:
                code, message = rest[:2]
                return f"{code} {message}"

    def close(self) -> None:
        self.sock.close(0)


def unknown_type(c):
    c.send([99, 1])
    return c.error(1), "400 unknown message type 99"


def options_not_a_map(c):
    c.send([native.REQUEST, 1, [1]])
    return c.error(1), "400 options must be a map"


def bad_urgent(c):
    c.send([native.REQUEST, 1, {"urgent": 1}], b"x")
    return c.error(1), "400 option urgent must be true or false"


def bad_timeout(c):
    c.send([native.REQUEST, 1, {"timeout": "soon"}])
    return c.error(1), "400 option timeout must be a number of seconds > 0"


def bad_deadline(c):
    c.send([native.OPEN, 1, {"deadline": "tomorrow"}])
    return c.error(1), "400 option deadline must be a Unix time (a number)"


def id_in_use(c):
    c.send([native.OPEN, "job-7", {}])  # relay reads on and on: still open
    c.send([native.OPEN, "job-7", {}])
    return c.error("job-7"), "400 request id 'job-7' is already in use"


def chunk_for_a_whole_request(c):
    c.send([native.REQUEST, 7, {}], b"held")  # hold runs until the module ends
    c.send([native.CHUNK, 7], b"more")
    return c.error(7), "400 request 7 is not streaming (no open, or ended)"


def chunks_beyond_credit(c):
    c.send([native.OPEN, 1, {}], b"x" * native.WINDOW)  # hold never reads: no credit comes
    c.send([native.CHUNK, 1], b"x")
    return c.error(1), "400 flow control: 1 bytes sent beyond credit"


def open_beyond_credit(c):
    c.send([native.OPEN, 1, {}], b"x" * 307_200)
    expected = "400 flow control: 45056 bytes sent beyond credit"
    assert f"`{expected[4:]}`" in DOC  # the page's own example
    return c.error(1), expected


def deadline_before_arrival(c):
    c.send([native.REQUEST, 1, {"deadline": 1.0}], b"x")
    return c.error(1), "504 deadline exceeded before the request arrived"


def timeout_while_running(c):
    c.send([native.REQUEST, 1, {"timeout": 0.2}], b"x")
    message = c.error(1)
    seconds = float(re.fullmatch(r"504 deadline exceeded \((\S+) s after acceptance\)", message)[1])
    assert seconds >= 0.2
    return message, message


def no_chunk_for_idle_timeout(c):
    c.send([native.OPEN, 1, {}], b"a")
    return c.error(1), "504 no request chunk for 0.3 s"


def bad_paced(c):
    c.send([native.REQUEST, 1, {"paced": "yes"}], b"x")
    return c.error(1), "400 option paced must be true or false"


def credit_for_an_unpaced_response(c):
    c.send([native.REQUEST, 7, {}], b"held")
    c.send([native.CREDIT, 7, 10])
    return c.error(7), "400 request 7 is not paced (no option paced)"


def bad_credit(c):
    c.send([native.REQUEST, 8, {"paced": True}], b"held")
    c.send([native.CREDIT, 8, -1])
    return c.error(8), "400 credit must be a number of bytes (an integer >= 0)"


def no_credit_for_idle_timeout(c):
    c.send([native.REQUEST, 1, {"paced": True}])  # and never credits what it gets
    return c.error(1), "504 no response credit for 0.3 s"


def handler_error(c):
    c.send([native.REQUEST, 3, {"urgent": True}], b"bad input")
    return c.error(3), "502 ValueError: bad input"


# documented message -> (task, scenario) producing it
SCENARIOS = {
    "400 unknown message type TYPE": [("relay", unknown_type)],
    "400 options must be a map": [("relay", options_not_a_map)],
    "400 option urgent must be true or false": [("relay", bad_urgent)],
    "400 option timeout must be a number of seconds > 0": [("relay", bad_timeout)],
    "400 option deadline must be a Unix time (a number)": [("relay", bad_deadline)],
    "400 request id ID is already in use": [("relay", id_in_use)],
    "400 request ID is not streaming (no open, or ended)": [("hold", chunk_for_a_whole_request)],
    "400 flow control: N bytes sent beyond credit": [("hold", chunks_beyond_credit), ("hold", open_beyond_credit)],
    "504 deadline exceeded before the request arrived": [("relay", deadline_before_arrival)],
    "504 deadline exceeded (S s after acceptance)": [("hold", timeout_while_running)],
    "504 no request chunk for S s": [("idle", no_chunk_for_idle_timeout)],
    "400 option paced must be true or false": [("relay", bad_paced)],
    "400 request ID is not paced (no option paced)": [("hold", credit_for_an_unpaced_response)],
    "400 credit must be a number of bytes (an integer >= 0)": [("hold", bad_credit)],
    "504 no response credit for S s": [("flood", no_credit_for_idle_timeout)],
    "502 ValueError: bad input": [("fails", handler_error)],
}


def test_every_quoted_message_has_a_scenario_and_every_scenario_a_quote():
    assert documented() == set(SCENARIOS)


@pytest.mark.parametrize("template, task, scenario", [
    (template, task, scenario) for template, cases in SCENARIOS.items() for task, scenario in cases
], ids=lambda value: value.__name__ if callable(value) else None)
def test_the_daemon_sends_the_documented_message(tasks, zmq_context, template, task, scenario):
    connection = Connection(zmq_context, tasks[task])
    try:
        actual, expected = scenario(connection)
    finally:
        connection.close()
    assert actual == expected
    assert pattern(template).fullmatch(actual), f"{actual!r} does not read as the documented {template!r}"
