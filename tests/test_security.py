"""Security end to end, with real keys made in the test: signed management (version 3) and its
refusals, replay protection, users and permissions, --require-signatures, and CURVE on the
management endpoint and on an app's endpoints."""

from __future__ import annotations

import json
import time

import pytest
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from cocaine.cli.keys import Signer, generate_curve_key, generate_signing_key
from support import endpoint, manifest, python_app, wait_for

ECHO = "def echo(request):\n    return request.body\n"
REFUSALS = ("unknown user", "bad signature", "stale timestamp", "replayed nonce", "signature required",
            "permission denied")


def make_key(folder, name: str, kind: str = "ed25519") -> tuple[str, str]:
    """A private key file (0600) and its public key file, as `cocaine-admin keygen` makes them."""
    return generate_signing_key(str(folder / name), kind, 2048)


def signer(folder, name: str, kind: str = "ed25519") -> Signer:
    private, _ = make_key(folder, name, kind)
    return Signer.load(name, private)


def exchange(daemon, frames: list[bytes]) -> dict:
    client = daemon.client()
    client.sock.send_multipart(frames)
    return json.loads(client.sock.recv())


def signed(daemon, who: Signer, message: dict) -> dict:
    return exchange(daemon, who.frames(message))


def refusals(daemon, who: Signer) -> dict:
    return signed(daemon, who, {"action": "info"})["node"]["security"]["refused"]


@pytest.fixture
def alice(tmp_path) -> Signer:
    return signer(tmp_path, "alice")


@pytest.fixture
def locked(make_daemon, tmp_path, alice):
    """A daemon that requires signatures, bootstrapped with alice's key by --add-user."""
    return make_daemon("--require-signatures", "--add-user", "alice", str(tmp_path / "alice.pub")).start()


# -- signed management ----------------------------------------------------------------------------
def test_signed_requests_are_served_with_ed25519_and_rsa_keys(locked, alice, tmp_path):
    reply = signed(locked, alice, {"action": "info"})
    security = reply["node"]["security"]
    assert security["signatures"] == "required" and security["users"] == 1
    # The test's start-up probe (version 2) was the one refusal so far.
    assert security["signed-requests"] == 1 and security["refused"] == {**dict.fromkeys(REFUSALS, 0),
                                                                        "signature required": 1}

    # The first user adds an RSA user limited to info; the stored document is the documented one.
    _, bob_public = make_key(tmp_path, "bob", "rsa")
    pem = open(bob_public).read()
    added = signed(locked, alice, {"action": "user-add",
                                   "users": {"bob": {"public-key": pem, "permissions": ["info"]}}})
    assert added["bob"]["added"] is True and added["bob"]["key-type"] == "rsa-2048"
    assert added["bob"]["fingerprint"].startswith("SHA256:") and added["bob"]["permissions"] == ["info"]
    stored = json.loads((locked.storage / "default" / "keys" / "bob").read_text())
    assert stored == {"public-key": pem, "permissions": ["info"]}

    bob = Signer.load("bob", str(tmp_path / "bob"))
    assert "node" in signed(locked, bob, {"action": "info"})
    listed = signed(locked, alice, {"action": "user-list"})["users"]
    assert set(listed) == {"alice", "bob"} and listed["alice"]["key-type"] == "ed25519"
    assert listed["alice"]["permissions"] == ["*"]
    assert "PUBLIC KEY" not in json.dumps(listed)  # fingerprints only, never the keys


def test_each_refusal_is_precise_counted_and_logged(locked, alice, tmp_path):
    app = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})

    # signature required: version 2 on a daemon that requires signatures.
    reply = locked.request({"version": 2, "action": "create", "apps": {"echo": app}})
    assert reply["error"].startswith("signature required: "), reply
    # unknown user: a key nobody installed.
    carol = signer(tmp_path, "carol")
    assert signed(locked, carol, {"action": "info"})["error"] == (
        "unknown user: no key for 'carol' in this daemon's storage")
    # bad signature: someone else's key, a request changed after signing, no signature at all.
    mallory = Signer("alice", signer(tmp_path, "mallory").key)
    assert signed(locked, mallory, {"action": "info"})["error"].startswith("bad signature: ")
    body, signature = alice.frames({"action": "info"})
    tampered = body.replace(b'"info"', b'"user-list"')
    assert exchange(locked, [tampered, signature])["error"].startswith("bad signature: ")
    assert exchange(locked, [body])["error"] == (
        "bad signature: version 3 requests carry the signature as a second frame")
    # stale timestamp: correctly signed, an hour away from the daemon's clock (either way).
    for offset in (-3600, 3600):
        message = {"version": 3, "action": "info", "username": "alice", "timestamp": time.time() + offset,
                   "nonce": f"stale-{offset}"}
        frame = json.dumps(message).encode()
        error = exchange(locked, [frame, alice.sign(frame)])["error"]
        assert error.startswith("stale timestamp: the request is 36") and "(allowed: 60 s)" in error, error
    # permission denied: a read-only user.
    _, dave_public = make_key(tmp_path, "dave")
    signed(locked, alice, {"action": "user-add", "users": {
        "dave": {"public-key": open(dave_public).read(), "permissions": ["info"]}}})
    dave = Signer.load("dave", str(tmp_path / "dave"))
    assert signed(locked, dave, {"action": "create", "apps": {"echo": app}})["error"] == (
        "permission denied: user 'dave' may not call create (allowed: info)")
    assert signed(locked, dave, {"action": "user-remove", "users": ["alice"]})["error"].startswith(
        "permission denied: ")

    # Plus the start-up probe's version 2 request.
    assert refusals(locked, alice) == {"unknown user": 1, "bad signature": 3, "stale timestamp": 2,
                                       "replayed nonce": 0, "signature required": 2, "permission denied": 2}
    assert "echo" not in signed(locked, alice, {"action": "info"})["apps"]  # nothing refused took effect
    log = locked.log()
    assert log.count("management: refused a request from 127.0.0.1") == 10, log
    assert "PUBLIC KEY" not in log and "PRIVATE KEY" not in log


def test_a_captured_request_cannot_be_replayed(locked, alice, tmp_path):
    app = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    captured = alice.frames({"action": "create", "apps": {"echo": app}})
    assert exchange(locked, captured)["echo"]["running"] is True
    assert signed(locked, alice, {"action": "delete", "apps": ["echo"]}) == {"echo": {"deleted": True}}
    replayed = exchange(locked, captured)
    assert replayed["error"] == "replayed nonce: this nonce was already used by 'alice' within the last 60 s"
    assert signed(locked, alice, {"action": "info"})["apps"] == {}
    assert refusals(locked, alice)["replayed nonce"] == 1


def test_a_request_captured_before_a_restart_cannot_be_replayed_after_it(locked, alice, tmp_path):
    app = manifest(python_app(tmp_path, ECHO), {"echo": {"type": "zeromq-server", "endpoint": endpoint()}})
    captured = alice.frames({"action": "create", "apps": {"echo": app}})
    assert exchange(locked, captured)["echo"]["running"] is True
    assert signed(locked, alice, {"action": "delete", "apps": ["echo"]}) == {"echo": {"deleted": True}}
    nonce = json.loads(captured[0])["nonce"]
    for restart in ("stop", "kill"):  # a clean stop, then a SIGKILL right after the answers
        if restart == "stop":
            assert locked.stop() == 0
        else:
            locked.proc.kill()
            locked.proc.wait(10)
        locked.start()
        replayed = exchange(locked, captured)
        assert replayed["error"] == "replayed nonce: this nonce was already used by 'alice' within the last 60 s"
        assert signed(locked, alice, {"action": "info"})["apps"] == {}
    # One small document per nonce still in the window (create, delete, two infos), none showing a nonce.
    stored = locked.storage / "default" / "nonces"
    assert len(list(stored.iterdir())) == 4
    assert not any(nonce in path.name or nonce in path.read_text() for path in stored.iterdir())


def test_nonces_leave_storage_once_their_window_has_passed(make_daemon, tmp_path, alice):
    daemon = make_daemon("--require-signatures", "--max-clock-skew", "2", "--add-user", "alice",
                         str(tmp_path / "alice.pub"))
    stored = daemon.storage / "default" / "nonces"
    stored.mkdir(parents=True)
    long_ago = int((time.time() - 3600) * 1000)
    (stored / f"{long_ago}-{'0' * 32}").write_text('{"user": "alice", "timestamp": 0}')
    daemon.start()
    assert list(stored.iterdir()) == []  # pruned at start

    def at(timestamp: float) -> list[bytes]:
        body = json.dumps({"version": 3, "action": "info", "username": "alice", "timestamp": timestamp,
                           "nonce": f"nonce-{timestamp!r}"}).encode()
        return [body, alice.sign(body)]

    early = time.time() - 1  # inside the 2 s window for one more second
    assert "node" in exchange(daemon, at(early))
    assert len(list(stored.iterdir())) == 1
    wait_for(lambda: time.time() > early + 2.01, message="the first request's window to pass")
    assert "node" in exchange(daemon, at(time.time()))
    assert len(list(stored.iterdir())) == 1  # the expired one left as the window moved on
    assert exchange(daemon, at(early))["error"].startswith("stale timestamp: ")


@pytest.fixture
def alice_in_storage(tmp_path, alice):
    """Files storage (in this process) that knows alice."""
    from cocaine.core.management.users import Users
    from cocaine.core.storage.files import FilesStorage

    storage = FilesStorage(str(tmp_path / "storage"), "default")
    Users(storage).add("alice", {"public-key": open(tmp_path / "alice.pub").read()})
    return storage


def test_the_nonces_in_the_window_are_bounded(alice_in_storage, alice, monkeypatch):
    from cocaine.core.management import auth
    from cocaine.core.management.auth import Busy, Guard
    from cocaine.core.management.users import Users

    monkeypatch.setattr(auth, "MAX_NONCES", 3)
    storage = alice_in_storage
    guard = Guard(Users(storage), require_signatures=True)
    for _ in range(3):
        frames = alice.frames({"action": "info"})
        guard.admit(json.loads(frames[0]), frames)
    frames = alice.frames({"action": "info"})
    with pytest.raises(Busy, match="^more than 3 signed requests within 60 s; try again later$"):
        guard.admit(json.loads(frames[0]), frames)
    # A restarted daemon counts the stored ones too.
    with pytest.raises(Busy):
        Guard(Users(storage), require_signatures=True).admit(json.loads(frames[0]), frames)


def test_a_nonce_that_cannot_be_stored_fails_its_request(alice_in_storage, alice, tmp_path):
    from cocaine.core.management.auth import Busy, Guard
    from cocaine.core.management.users import Users

    guard = Guard(Users(alice_in_storage), require_signatures=True)
    (tmp_path / "storage" / "default" / "nonces").write_text("")  # a file where the folder goes
    frames = alice.frames({"action": "info"})
    with pytest.raises(Busy, match=r"^cannot record the request's nonce, try again later: cannot write .*/nonces/"):
        guard.admit(json.loads(frames[0]), frames)
    assert guard.accepted_signed == 0


def test_without_require_signatures_both_versions_are_served(daemon, tmp_path):
    # Bootstrap without --add-user: on an open daemon, version 2 may add the first user.
    _, public = make_key(tmp_path, "alice")
    added = daemon.request({"version": 2, "action": "user-add",
                            "users": {"alice": {"public-key": open(public).read()}}})
    assert added["alice"]["added"] is True and added["alice"]["permissions"] == ["*"]
    alice = Signer.load("alice", str(tmp_path / "alice"))
    reply = signed(daemon, alice, {"action": "info"})
    assert reply["node"]["security"]["signatures"] == "optional"
    assert "node" in daemon.request({"version": 2, "action": "info"})
    # Signed requests are still checked when unsigned ones are accepted.
    assert signed(daemon, Signer("alice", signer(tmp_path, "eve").key), {"action": "info"})["error"].startswith(
        "bad signature: ")


def test_user_management_errors_and_removal(locked, alice, tmp_path):
    _, weak_public = make_key(tmp_path, "bob")
    pem = open(weak_public).read()
    reply = signed(locked, alice, {"action": "user-add", "users": {
        "bad-key": {"public-key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"},
        "bad-permission": {"public-key": pem, "permissions": ["fly"]},
        "../etc": {"public-key": pem},
        "alice": {"public-key": pem},
        "bob": {"public-key": pem, "permissions": ["info", "user-list"]},
    }})
    assert reply["bad-key"]["error"].startswith("user 'bad-key': public-key: expected an Ed25519 or RSA")
    assert "nope" not in reply["bad-key"]["error"]
    assert reply["bad-permission"]["error"].startswith("user 'bad-permission': permissions: unknown action 'fly'")
    assert reply["../etc"]["error"].startswith("user name: invalid name '../etc'")
    assert reply["alice"]["error"] == "user 'alice' already exists; remove it first"
    assert reply["bob"]["added"] is True

    bob = Signer.load("bob", str(tmp_path / "bob"))
    assert set(signed(locked, bob, {"action": "user-list"})["users"]) == {"alice", "bob"}
    removed = signed(locked, alice, {"action": "user-remove", "users": ["bob", "ghost"]})
    assert removed == {"bob": {"removed": True}, "ghost": {"error": "no user named 'ghost'"}}
    # A removed key stops working at once.
    assert signed(locked, bob, {"action": "info"})["error"].startswith("unknown user: ")
    assert not (locked.storage / "default" / "keys" / "bob").exists()


def test_add_user_at_start_refuses_a_bad_key(make_daemon, tmp_path):
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    daemon = make_daemon("--add-user", "alice", str(bad))
    with pytest.raises(AssertionError, match="cocained exited with 2"):
        daemon.start()
    assert f"--add-user alice {bad}: user 'alice': public-key: expected an Ed25519 or RSA" in daemon.log()


# -- CURVE ----------------------------------------------------------------------------------------
def curve_keys(folder, name: str) -> tuple[bytes, bytes]:
    public_path, secret_path = generate_curve_key(str(folder / name))
    return zmq.auth.load_certificate(secret_path)


def handshake(sock: zmq.Socket, address: str) -> int:
    """Connect and return how the CURVE handshake ended (succeeded or failed for what reason)."""
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    try:
        sock.connect(address)
        assert monitor.poll(10_000), "no handshake within 10 s"
        return recv_monitor_message(monitor)["event"]
    finally:
        sock.disable_monitor()
        monitor.close(0)


def curve_socket(context, socket_type, keys, server_public):
    sock = context.socket(socket_type)
    sock.linger = 0
    sock.rcvtimeo = 10_000
    sock.curve_publickey, sock.curve_secretkey = keys
    sock.curve_serverkey = server_public
    return sock


@pytest.fixture
def curve_daemon(make_daemon, tmp_path):
    """A daemon with CURVE on every network-facing socket: operators' keys for management, another
    folder for app clients."""
    keys = tmp_path / "keys"
    for folder in ("operators", "clients"):
        (keys / folder).mkdir(parents=True)
    server = curve_keys(keys, "server")
    operator = curve_keys(keys, "operator")
    client = curve_keys(keys, "client")
    stranger = curve_keys(keys, "stranger")
    (keys / "operators" / "operator.key").write_text((keys / "operator.key").read_text())
    (keys / "clients" / "client.key").write_text((keys / "client.key").read_text())
    daemon = make_daemon("--curve-secret-key", str(keys / "server.key_secret"),
                         "--curve-clients", str(keys / "clients"),
                         "--curve-management-clients", str(keys / "operators"))
    daemon.curve = (*operator, server[0])
    daemon.start()
    daemon.keys = {"server": server, "operator": operator, "client": client, "stranger": stranger}
    return daemon


def test_curve_management_serves_known_keys_and_refuses_others(curve_daemon, zmq_context):
    keys = curve_daemon.keys
    server_public = keys["server"][0]
    assert "node" in curve_daemon.info()  # the operator's key

    for who in ("stranger", "client"):  # an unknown key; an app client's key is not an operator's
        sock = curve_socket(zmq_context, zmq.REQ, keys[who], server_public)
        try:
            assert handshake(sock, curve_daemon.management) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        finally:
            sock.close(0)
    plain = zmq_context.socket(zmq.REQ)
    plain.linger = 0
    try:
        # A client without CURVE fails the handshake (libzmq reports it with or without detail).
        assert handshake(plain, curve_daemon.management) in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                                              zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    finally:
        plain.close(0)

    transport = curve_daemon.info()["node"]["security"]["transport"]
    assert transport["curve"]["public-key"] == server_public.decode()
    assert transport["curve"]["clients"] == {"management": 1, "apps": 1}
    assert transport["curve"]["refused"]["management"] == 2
    assert transport["max-message-size"] == 16 << 20
    assert "curve: refused an unknown client key" in curve_daemon.log()


def test_curve_app_endpoints_serve_known_keys_and_refuse_others(curve_daemon, zmq_context, tmp_path):
    keys = curve_daemon.keys
    server_public = keys["server"][0]
    app_endpoint, pubsub = endpoint(), endpoint()
    curve_daemon.create("echo", dict(
        manifest(python_app(tmp_path, ECHO + "def tick():\n    return b'tock'\n"),
                 {"echo": {"type": "zeromq-server", "endpoint": app_endpoint},
                  "tick": {"type": "recurring-timer", "interval": 50}}),
        pubsub={"endpoint": pubsub}))

    client = curve_socket(zmq_context, zmq.REQ, keys["client"], server_public)
    stranger = curve_socket(zmq_context, zmq.REQ, keys["stranger"], server_public)
    subscriber = curve_socket(zmq_context, zmq.SUB, keys["client"], server_public)
    intruder = curve_socket(zmq_context, zmq.SUB, keys["stranger"], server_public)
    try:
        client.connect(app_endpoint)
        client.send(b"secret")
        assert client.recv_multipart() == [b"ok", b"secret"]
        assert handshake(stranger, app_endpoint) == zmq.EVENT_HANDSHAKE_FAILED_AUTH

        subscriber.subscribe(b"tick")
        subscriber.connect(pubsub)
        topic, _meta, payload = subscriber.recv_multipart()
        assert (topic, payload) == (b"tick result", b"tock")
        assert handshake(intruder, pubsub) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        for sock in (client, stranger, subscriber, intruder):
            sock.close(0)
    wait_for(lambda: curve_daemon.info()["node"]["security"]["transport"]["curve"]["refused"]["apps"] == 2,
             message="both refusals counted")
