"""The conformance suite: one set of end-to-end tests run against every language's example app
(examples/conformance/<language>/, the same tasks in each), each behind a real daemon with real
worker processes. A new language is done when it passes.
"""

import http.client
import json
from dataclasses import dataclass

import pytest
import zmq

from cocaine.cli.manifest import load_manifest
from cocaine.drivers.native_client import Client
from runtimes import BROKEN_APPS, CONFORMANCE, LANGUAGES, app_source, require_runtime
from support import Daemon, endpoint, wait_for

pytestmark = pytest.mark.timeout(120)


@dataclass
class Served:
    daemon: Daemon
    app: str
    addresses: dict  # task -> its server's endpoint
    manifest: dict


@pytest.fixture(scope="module", params=LANGUAGES)
def language(request):
    return request.param


@pytest.fixture(scope="module")
def served(language, module_daemon, request):
    """The language's conformance app, created from its example manifest on free ports."""
    require_runtime(language)
    daemon = module_daemon
    manifest = load_manifest(str(CONFORMANCE / language / "manifest.json"))
    if language == "cpp":
        manifest["args"] = str(request.getfixturevalue("cpp_conformance_app"))
    addresses = {}
    for name, task in manifest["tasks"].items():
        if "endpoint" in task:  # zeromq-server, native-server and http-server tasks
            task["endpoint"] = addresses[name] = endpoint()
    manifest["pubsub"]["endpoint"] = endpoint()
    app = f"conformance-{language}"
    daemon.create(app, manifest)
    yield Served(daemon, app, addresses, manifest)
    assert daemon.request({"version": 2, "action": "delete", "apps": [app]})[app] == {"deleted": True}



def call(served, task, *frames, timeout=15.0):
    client = served.daemon.client(served.addresses[task], timeout=timeout)
    try:
        return client.call(*frames)
    finally:
        client.close()


def test_echo(served):
    assert call(served, "echo", b"hello") == [b"ok", b"hello"]
    assert call(served, "echo", b"multi", b"-", b"frame") == [b"ok", b"multi-frame"]
    assert call(served, "echo", b"") == [b"ok", b""]


def test_a_chunked_response(served):
    assert call(served, "chunks") == [b"ok", b"a", b"b", b"c"]


def test_the_whole_body(served):
    assert call(served, "upper", b"whole ", b"body") == [b"ok", b"WHOLE BODY"]


def test_a_streamed_request_is_answered_while_it_arrives(served):
    with Client(served.addresses["stream"], context=served.daemon.context, timeout=15) as client:
        call = client.request(b"a", stream=True)
        chunks = iter(call)
        assert next(chunks) == b"a"  # answered before the rest of the request exists
        call.write(b"b")
        assert next(chunks) == b"b"
        call.write(b"c")
        call.end()
        assert list(chunks) == [b"c"]


def test_a_large_streamed_request_flows_on_credit(served):
    # The native-server lets a client get only 256 KiB ahead of what the worker has taken: 2 MiB go
    # through only if the worker credits what its handler reads.
    data = bytes(range(256)) * 8192
    with Client(served.addresses["stream"], context=served.daemon.context, timeout=15) as client:
        call = client.request(stream=True)
        for start in range(0, len(data), 65536):
            call.write(data[start:start + 65536])
        call.end()
        assert call.read() == data


def test_http_metadata_reaches_the_handler_and_its_response_metadata_the_client(served):
    host, port = served.addresses["respond"].rpartition("/")[2].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.request("POST", "/p?a=1", body=b"x", headers={"X-Test": "t"})
        response = connection.getresponse()
        body = response.read().decode()
        local = connection.sock.getsockname()
    finally:
        connection.close()
    assert response.status == 201
    assert response.getheader("content-type") == "text/plain"
    assert response.getheader("x-conformance") == "yes"
    assert body == f"POST /p?a=1 t {local[0]}:{local[1]}"


def test_an_application_error_is_502_and_the_app_keeps_serving(served):
    status, code, message = call(served, "fail", b"zz")
    assert (status, code) == (b"error", b"502")
    assert b"bad input: zz" in message
    assert call(served, "echo", b"still here") == [b"ok", b"still here"]


def test_a_crash_fails_only_its_job_with_500_and_the_app_keeps_serving(served):
    crashes = served.daemon.info(served.app)["pool"]["exits"].get("crash", 0)
    assert call(served, "crash") == [b"error", b"500", b"worker exited with status 7"]
    assert call(served, "echo", b"after the crash") == [b"ok", b"after the crash"]  # another worker serves
    wait_for(lambda: served.daemon.info(served.app)["pool"]["exits"].get("crash", 0) == crashes + 1,
             message="the crash counted among the pool's exits")


def test_a_hang_is_ended_by_the_heartbeat_timeout_with_504(served):
    timeout = served.manifest["engine"]["heartbeat-timeout"]
    status, code, message = call(served, "hang", timeout=timeout + 15)
    assert (status, code) == (b"error", b"504")
    assert f"heartbeat-timeout ({timeout:g} s)".encode() in message
    assert call(served, "echo", b"after the hang") == [b"ok", b"after the hang"]


def test_a_timer_event_is_published(served):
    sub = served.daemon.context.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = 10_000
    sub.subscribe(b"tick")
    sub.connect(served.manifest["pubsub"]["endpoint"])
    try:
        topic, meta, *payload = sub.recv_multipart()
    finally:
        sub.close(0)
    meta = json.loads(meta)
    assert topic == b"tick result"
    assert payload == [f"tick {meta['tick']}".encode()]


def test_an_app_that_cannot_load_answers_503_with_the_reason(served, language, tmp_path):
    daemon = served.daemon
    name, source = BROKEN_APPS[language]
    address = endpoint()
    daemon.create("broken", {"type": language, "args": app_source(language, tmp_path, source, name),
                             "tasks": {"echo": {"type": "zeromq-server", "endpoint": address}}})
    client = daemon.client(address, timeout=15)
    status, code, message = client.call(b"x")
    assert (status, code) == (b"error", b"503")
    assert b"cannot load" in message
    assert daemon.request({"version": 2, "action": "delete", "apps": ["broken"]})["broken"] == {"deleted": True}
