"""The management protocol exactly as the seed shows it: one JSON frame in, one JSON frame out."""

import json

import pytest
import zmq

from support import endpoint, manifest, python_app, wait_for

ECHO = "def echo(request):\n    return request.body\n"


def echo_manifest(tmp_path, **engine):
    return manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}},
                    **engine)


def test_create_saves_starts_and_reports_info(daemon, tmp_path):
    m = echo_manifest(tmp_path, pool_limit=2)
    reply = daemon.request({"version": 2, "action": "create", "apps": {"echo": m}})
    info = reply["echo"]
    assert info["running"] is True
    assert info["engine"]["pool-limit"] == 2
    assert info["tasks"]["echo"]["endpoint"] == m["tasks"]["echo"]["endpoint"]
    # Saved as JSON at <location>/<instance>/apps/<app>.
    assert json.loads((daemon.storage / "default" / "apps" / "echo").read_text()) == m

    client = daemon.client(m["tasks"]["echo"]["endpoint"])
    assert client.call(b"ping") == [b"ok", b"ping"]

    node = daemon.info()
    assert node["node"]["instance"] == "default" and node["node"]["apps"] == 1
    app = node["apps"]["echo"]
    assert app["pool"]["total"] == 1 and app["pool"]["busy"] == 0
    assert app["queue"]["depth"] == 0
    assert app["tasks"]["echo"]["stats"]["succeeded"] == 1
    assert app["jobs"]["accepted"] == 1


def test_create_reports_each_app_on_its_own(daemon, tmp_path):
    good = echo_manifest(tmp_path)
    bad = dict(good, engine={"pool-limit": -1})
    reply = daemon.request({"version": 2, "action": "create", "apps": {"good": good, "bad": bad}})
    assert reply["good"]["running"] is True
    assert reply["bad"]["error"] == "app 'bad': engine.pool-limit: expected an integer from 1 to 1024, got -1"
    assert not (daemon.storage / "default" / "apps" / "bad").exists()
    assert set(daemon.info()["apps"]) == {"good"}


def test_create_twice_is_an_error_for_that_app(daemon, tmp_path):
    m = echo_manifest(tmp_path)
    daemon.create("echo", m)
    reply = daemon.request({"version": 2, "action": "create", "apps": {"echo": m}})
    assert "already exists" in reply["echo"]["error"]


def test_create_fails_cleanly_when_an_endpoint_is_taken(daemon, tmp_path, zmq_context):
    taken = zmq_context.socket(zmq.ROUTER)
    address = endpoint()
    taken.bind(address)
    try:
        m = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": address}})
        reply = daemon.request({"version": 2, "action": "create", "apps": {"echo": m}})
        assert "cannot start" in reply["echo"]["error"] and "Address already in use" in reply["echo"]["error"]
        assert not (daemon.storage / "default" / "apps" / "echo").exists()
    finally:
        taken.close(0)
    # The failed app released what it had bound: the same app can be created now.
    daemon.create("echo", m)


def test_delete_stops_the_engine_and_removes_the_manifest(daemon, tmp_path):
    m = echo_manifest(tmp_path)
    daemon.create("echo", m)
    client = daemon.client(m["tasks"]["echo"]["endpoint"])
    assert client.call(b"x") == [b"ok", b"x"]
    # A fork server names itself once its interpreter is up: until then it looks like a second worker.
    wait_for(lambda: len(daemon.workers()) == 1, message="one worker process")
    reply = daemon.request({"version": 2, "action": "delete", "apps": ["echo", "ghost"]})
    assert reply["echo"] == {"deleted": True}
    assert reply["ghost"] == {"error": "no app named 'ghost'"}
    assert not (daemon.storage / "default" / "apps" / "echo").exists()
    assert daemon.info()["apps"] == {}
    wait_for(lambda: not daemon.workers(), message="the app's worker to exit")


def test_reload_rereads_the_manifest_from_storage(daemon, tmp_path):
    m = echo_manifest(tmp_path, pool_limit=1)
    daemon.create("echo", m)
    stored = daemon.storage / "default" / "apps" / "echo"
    stored.write_text(json.dumps(dict(m, engine={"pool-limit": 3})))
    reply = daemon.request({"version": 2, "action": "reload", "apps": ["echo"]})
    assert reply["echo"]["engine"]["pool-limit"] == 3
    assert daemon.client(m["tasks"]["echo"]["endpoint"]).call(b"after") == [b"ok", b"after"]


def test_reload_with_a_broken_manifest_keeps_the_running_app(daemon, tmp_path):
    m = echo_manifest(tmp_path)
    daemon.create("echo", m)
    (daemon.storage / "default" / "apps" / "echo").write_text(json.dumps(dict(m, tasks={})))
    reply = daemon.request({"version": 2, "action": "reload", "apps": ["echo"]})
    assert reply["echo"]["error"].startswith("app 'echo': tasks: expected a non-empty object")
    assert daemon.client(m["tasks"]["echo"]["endpoint"]).call(b"still") == [b"ok", b"still"]


def test_info_can_name_apps(daemon, tmp_path):
    daemon.create("echo", echo_manifest(tmp_path))
    reply = daemon.request({"version": 2, "action": "info", "apps": ["echo", "nope"]})
    assert reply["apps"]["echo"]["running"] is True
    assert reply["apps"]["nope"] == {"error": "no app named 'nope'"}


@pytest.mark.parametrize("request_bytes, error", [
    (b"not json", "request is not valid JSON"),
    (b"\xff\xfe", "request is not valid JSON"),
    (b"[1, 2]", "request must be a JSON object, got list"),
    (b'{"action": "info"}', "version: expected 2 (or 3 for signed requests), got None"),
    (b'{"version": 1, "action": "info"}', "version: expected 2 (or 3 for signed requests), got 1"),
    (b'{"version": "2", "action": "info"}', "version: expected 2 (or 3 for signed requests), got '2'"),
    (b'{"version": 3, "action": "info"}', "username: expected a user name, got None"),
    (b'{"version": 2, "action": "explode"}',
     "action: expected one of create, delete, reload, info, user-add, user-list, user-remove, got 'explode'"),
    (b'{"version": 2}',
     "action: expected one of create, delete, reload, info, user-add, user-list, user-remove, got None"),
    (b'{"version": 2, "action": "create", "apps": []}', "apps: expected a non-empty object"),
    (b'{"version": 2, "action": "create"}', "apps: expected a non-empty object"),
    (b'{"version": 2, "action": "delete", "apps": "echo"}', "apps: expected a non-empty list of app names for delete"),
    (b'{"version": 2, "action": "reload", "apps": [1]}', "apps: expected a non-empty list of app names for reload"),
    (b'{"version": 2, "action": "create", "apps": {"../etc": {}}}', "invalid name '../etc'"),
])
def test_bad_requests_get_an_error_and_the_daemon_keeps_serving(daemon, request_bytes, error):
    reply = daemon.request(request_bytes)
    assert error in (reply.get("error") or json.dumps(reply)), reply
    assert "node" in daemon.info()


def test_oversized_and_multi_frame_requests(daemon):
    client = daemon.client()
    client.sock.send(b'{"version": 2, "action": "info", "pad": "' + b"x" * (2 << 20) + b'"}')
    assert "the limit is 1048576" in json.loads(client.sock.recv())["error"]
    client.sock.send_multipart([b'{"version": 2, "action": "info"}', b"extra"])
    assert json.loads(client.sock.recv())["error"] == "version 2 requests are one frame, got 2"
    assert "node" in daemon.info()
