"""Python apps: how handlers are called and what they may return."""

import pytest

from support import endpoint, manifest, python_app

APP = '''
import json

def echo(request):
    return request.body

def text(request):
    return "héllo " + request.text()

def nothing(request):
    return None

def chunks(request):
    yield b"a"
    yield "b"
    yield bytearray(b"c")

def as_list(request):
    return [b"1", b"2"]

def meta(request):
    return json.dumps({"task": request.task, "bytes": bytes(request).decode(), "meta": request.meta})

def no_args():
    return b"called without a request"

def fails(request):
    raise ValueError("bad input: " + request.text())

def fails_midstream(request):
    yield b"first"
    raise KeyError("later")

def wrong_type(request):
    return 42

def wrong_chunk(request):
    yield 1.5

not_callable = "a string"
'''

TASKS = ["echo", "text", "nothing", "chunks", "as_list", "meta", "no_args", "fails", "fails_midstream",
         "wrong_type", "wrong_chunk", "not_callable", "missing"]


@pytest.fixture
def call(daemon, tmp_path):
    addresses = {task: endpoint() for task in TASKS}
    app = python_app(tmp_path, APP)
    daemon.create("py", manifest(app, {t: {"type": "zeromq-server", "endpoint": a} for t, a in addresses.items()}))
    return lambda task, *frames: daemon.client(addresses[task]).call(*frames)


@pytest.mark.parametrize("task, request_frames, reply", [
    ("echo", [b"hi"], [b"ok", b"hi"]),
    ("echo", [b""], [b"ok", b""]),
    ("echo", [b"multi", b"-", b"frame"], [b"ok", b"multi-frame"]),
    ("text", [b"world"], [b"ok", "héllo world".encode()]),
    ("nothing", [b"x"], [b"ok"]),
    ("chunks", [b""], [b"ok", b"a", b"b", b"c"]),
    ("as_list", [b""], [b"ok", b"1", b"2"]),
    ("no_args", [b""], [b"ok", b"called without a request"]),
    ("fails", [b"zz"], [b"error", b"502", b"ValueError: bad input: zz"]),
    ("wrong_type", [b""], [b"error", b"502",
                           b"TypeError: handler returned int; expected bytes, str, None or an iterable of them"]),
    ("wrong_chunk", [b""], [b"error", b"502", b"TypeError: handler produced float; expected bytes or str"]),
    ("not_callable", [b""], [b"error", b"502", b"the app has no callable 'not_callable'"]),
    ("missing", [b""], [b"error", b"502", b"the app has no callable 'missing'"]),
])
def test_handler_results(call, task, request_frames, reply):
    assert call(task, *request_frames) == reply


def test_an_error_after_some_chunks_is_still_one_error_reply(call):
    # zeromq-server sends one reply per request: the error replaces the partial response.
    assert call("fails_midstream") == [b"error", b"502", b"KeyError: 'later'"]
    assert call("echo", b"after") == [b"ok", b"after"]


def test_request_object(call):
    import json

    reply = json.loads(call("meta", b"body")[1])
    assert reply == {"task": "meta", "bytes": "body", "meta": {}}


def test_app_errors_are_logged_with_their_traceback(call, daemon):
    call("fails", b"logged")
    log = daemon.log()
    assert "Traceback" in log and "ValueError: bad input: logged" in log


def test_args_accepts_local_urls(daemon, tmp_path):
    app = python_app(tmp_path, "def echo(request):\n    return request.body\n")
    address = endpoint()
    daemon.create("local", manifest(f"local://{app}", {"echo": {"type": "zeromq-server", "endpoint": address}}))
    assert daemon.client(address).call(b"url") == [b"ok", b"url"]
