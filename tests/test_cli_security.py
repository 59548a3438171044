"""cocaine-admin's security side, end to end: keygen, signing with --user/--key (or the environment),
user commands, and CURVE client keys."""

from __future__ import annotations

import json
import os
import stat

import pytest
import zmq.auth

from support import endpoint
from test_cli import admin, one_line


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    return folder


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keygen_writes_private_keys_for_the_owner_only(keys):
    made = admin("keygen", str(keys / "alice"))
    assert made.returncode == 0, made.stderr
    assert mode(keys / "alice") == 0o600 and mode(keys / "alice.pub") == 0o644
    assert (keys / "alice").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (keys / "alice.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")

    rsa = admin("keygen", "--type", "rsa", "--bits", "2048", str(keys / "bob"))
    assert rsa.returncode == 0, rsa.stderr
    assert mode(keys / "bob") == 0o600

    curve = admin("keygen", "--curve", str(keys / "server"))
    assert curve.returncode == 0, curve.stderr
    assert mode(keys / "server.key_secret") == 0o600 and mode(keys / "server.key") == 0o644

    again = admin("keygen", str(keys / "alice"))
    assert again.returncode == 1
    assert one_line(again.stderr) == f"cocaine-admin: {keys / 'alice'} exists; not overwriting it"


def test_signed_commands_and_user_management(make_daemon, keys):
    assert admin("keygen", str(keys / "alice")).returncode == 0
    assert admin("keygen", str(keys / "viewer")).returncode == 0
    daemon = make_daemon("--require-signatures", "--add-user", "alice", str(keys / "alice.pub")).start()
    as_alice = ["--user", "alice", "--key", str(keys / "alice")]

    unsigned = admin("info", endpoint=daemon.management)
    assert unsigned.returncode == 1
    assert one_line(unsigned.stderr).startswith(
        f"cocaine-admin: {daemon.management} refused the request: signature required: ")

    shown = admin(*as_alice, "info", endpoint=daemon.management)
    assert shown.returncode == 0, shown.stderr
    # Refused so far: the start-up probe and the unsigned info above.
    assert shown.stdout.splitlines()[1] == "  security: signatures required, 1 user, 2 refused (2 signature required)"

    added = admin(*as_alice, "user", "add", "viewer", str(keys / "viewer.pub"), "-p", "info",
                  endpoint=daemon.management)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("viewer: added, ed25519 SHA256:") and added.stdout.endswith(", may call info\n")

    # The environment variables sign as well.
    env = {"COCAINE_ENDPOINT": daemon.management, "COCAINE_USER": "viewer", "COCAINE_KEY": str(keys / "viewer")}
    assert admin("info", env=env).returncode == 0
    denied = admin("user", "list", env=env)
    assert denied.returncode == 1
    assert one_line(denied.stderr).endswith("permission denied: user 'viewer' may not call user-list (allowed: info)")

    listed = admin(*as_alice, "user", "list", endpoint=daemon.management)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("alice ") and lines[0].endswith("may call *")
    assert lines[1].startswith("viewer ") and "ed25519" in lines[1] and lines[1].endswith("may call info")

    as_json = admin(*as_alice, "--json", "user", "list", endpoint=daemon.management)
    assert set(json.loads(as_json.stdout)["users"]) == {"alice", "viewer"}

    removed = admin(*as_alice, "user", "remove", "viewer", "ghost", endpoint=daemon.management)
    assert removed.returncode == 1
    assert removed.stdout == "viewer: removed\n"
    assert one_line(removed.stderr) == "cocaine-admin: user-remove ghost: no user named 'ghost'"
    gone = admin("info", env=env)
    assert gone.returncode == 1 and "unknown user: no key for 'viewer'" in gone.stderr


def test_key_problems_are_reported_before_anything_is_sent(keys):
    assert admin("keygen", str(keys / "alice")).returncode == 0
    address = endpoint()  # nothing listens: every case below fails before talking to it

    alone = admin("--user", "alice", "info", endpoint=address)
    assert alone.returncode == 2 and "--user and --key go together" in alone.stderr

    os.chmod(keys / "alice", 0o644)
    exposed = admin("--user", "alice", "--key", str(keys / "alice"), "info", endpoint=address)
    assert exposed.returncode == 1
    assert one_line(exposed.stderr) == (f"cocaine-admin: private key {keys / 'alice'} is accessible by others "
                                        f"(mode 644); chmod 600 it")

    os.chmod(keys / "alice.pub", 0o600)  # past the mode check: the content is wrong
    public = admin("--user", "alice", "--key", str(keys / "alice.pub"), "info", endpoint=address)
    assert public.returncode == 1 and f"{keys / 'alice.pub'} is not a PEM private key" in public.stderr

    private_as_public = admin("user", "add", "bob", str(keys / "alice"), endpoint=address)
    assert private_as_public.returncode == 1
    assert "is a private key; give the public one (.pub)" in private_as_public.stderr


def test_curve_client_keys(make_daemon, keys):
    for name in ("server", "operator", "stranger"):
        assert admin("keygen", "--curve", str(keys / name)).returncode == 0
    allowed = keys / "allowed"
    allowed.mkdir()
    (allowed / "operator.key").write_text((keys / "operator.key").read_text())
    daemon = make_daemon("--curve-secret-key", str(keys / "server.key_secret"), "--curve-clients", str(allowed))
    daemon.curve = (*zmq.auth.load_certificate(keys / "operator.key_secret"),
                    zmq.auth.load_certificate(keys / "server.key")[0])
    daemon.start()

    known = admin("--curve-key", str(keys / "operator.key_secret"), "--curve-server-key", str(keys / "server.key"),
                  "info", endpoint=daemon.management)
    assert known.returncode == 0, known.stderr
    assert "CURVE on (0 keys refused)" in known.stdout

    env = {"COCAINE_CURVE_KEY": str(keys / "stranger.key_secret"), "COCAINE_CURVE_SERVER_KEY": str(keys / "server.key")}
    refused = admin("info", endpoint=daemon.management, env=env)
    assert refused.returncode == 1
    assert one_line(refused.stderr) == (f"cocaine-admin: {daemon.management} refused this client's CURVE key "
                                        f"(--curve-key)")
