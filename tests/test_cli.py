"""cocaine-admin, end to end: a real CLI process against a real cocained (or a fake one, to script
the replies a real daemon cannot be made to give)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from support import CLI, EXAMPLES, RUN_TIMEOUT, admin, endpoint, wait_for

def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def echo_dir(tmp_path) -> Path:
    """examples/echo copied under tmp_path, its fixed ports replaced by free ones; ``args`` stays
    relative (``app.py``), so creating it exercises the CLI's path resolution."""
    folder = tmp_path / "echo-app"
    folder.mkdir()
    shutil.copy(EXAMPLES / "echo" / "app.py", folder / "app.py")
    manifest = json.loads((EXAMPLES / "echo" / "manifest.json").read_text())
    assert manifest["args"] == "app.py"
    manifest["pubsub"]["endpoint"] = endpoint()
    for task in manifest["tasks"].values():
        if "endpoint" in task:
            task["endpoint"] = endpoint()
    write_manifest(folder, manifest)
    return folder


def write_manifest(folder: Path, manifest: dict, name: str = "manifest.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(manifest, indent=2))
    return path


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# -- against a real daemon ------------------------------------------------------------------------
def test_create_call_info_reload_delete(daemon, echo_dir, tmp_path):
    echo_endpoint = read_manifest(echo_dir)["tasks"]["echo"]["endpoint"]
    app_path = str(echo_dir / "app.py")

    # The manifest path is relative to the CLI's working folder, args relative to the manifest.
    created = admin("create", "echo", "echo-app/manifest.json", endpoint=daemon.management, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("echo: created, running"), created.stdout
    assert created.stderr == ""

    assert daemon.client(echo_endpoint).call(b"hello") == [b"ok", b"hello"]
    wait_for(lambda: daemon.info("echo")["tasks"]["echo"]["stats"]["succeeded"] == 1,
             message="the echo job in the statistics")

    shown = admin("info", endpoint=daemon.management)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("node ") and ", cocaine " in lines[0] and ", 1 app" in lines[0], lines[0]
    assert lines[1].startswith("echo: running, up "), shown.stdout
    assert lines[2].startswith("  workers ") and "/4 (" in lines[2] \
        and re.search(r" MiB\)  credit \d+ \(jobs of [\d.]+ ms\)", lines[2])
    assert " ms)  queue 0/100 (peak " in lines[2]
    echo_line = next(line for line in lines if line.startswith("  task echo "))
    assert "zeromq-server" in echo_line and echo_endpoint in echo_line, echo_line
    assert "1 accepted, 1 succeeded, 0 failed, 0 rejected" in echo_line and "p50 " in echo_line
    assert "p90 " in echo_line and "p99 " in echo_line
    worker_line = next(line for line in lines if line.startswith("  worker "))
    assert " pid " in worker_line and " MiB " in worker_line and " up " in worker_line, worker_line
    assert any(line.startswith("  task tick ") and "every 5000 ms" in line for line in lines), shown.stdout

    as_json = admin("--json", "info", "echo", endpoint=daemon.management)
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert set(reply) == {"node", "apps"} and list(reply["apps"]) == ["echo"]
    assert reply["apps"]["echo"]["args"] == app_path  # sent absolute: the daemon requires it
    assert reply["apps"]["echo"]["tasks"]["echo"]["stats"]["succeeded"] == 1

    reloaded = admin("reload", "echo", endpoint=daemon.management)
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.startswith("echo: reloaded, running"), reloaded.stdout
    assert daemon.client(echo_endpoint).call(b"again") == [b"ok", b"again"]

    deleted = admin("delete", "echo", endpoint=daemon.management)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == "echo: deleted\n"
    assert daemon.info()["apps"] == {}
    assert not (daemon.storage / "default" / "apps" / "echo").exists()


def test_local_url_with_a_relative_path_is_resolved(daemon, echo_dir):
    manifest = read_manifest(echo_dir)
    manifest["args"] = "local://app.py"
    path = write_manifest(echo_dir, manifest, "local.json")
    created = admin("--json", "create", "echo", str(path), endpoint=daemon.management)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["echo"]["args"] == str(echo_dir / "app.py")
    stored = json.loads((daemon.storage / "default" / "apps" / "echo").read_text())
    assert stored["args"] == f"local://{echo_dir / 'app.py'}"


def test_invalid_manifest_fails_with_the_daemons_error_naming_the_field(daemon, echo_dir):
    manifest = read_manifest(echo_dir)
    manifest["engine"]["pool-limit"] = 0
    path = write_manifest(echo_dir, manifest, "bad.json")
    result = admin("create", "echo", str(path), endpoint=daemon.management)
    assert result.returncode == 1
    assert result.stdout == ""
    assert one_line(result.stderr) == ("cocaine-admin: create echo: app 'echo': engine.pool-limit: "
                                       "expected an integer from 1 to 1024, got 0")
    assert daemon.info()["apps"] == {}


def test_a_failure_for_one_app_still_shows_the_others(daemon, echo_dir):
    created = admin("create", "echo", str(echo_dir / "manifest.json"), endpoint=daemon.management)
    assert created.returncode == 0, created.stderr

    shown = admin("info", "echo", "ghost", endpoint=daemon.management)
    assert shown.returncode == 1
    assert "echo: running" in shown.stdout
    assert one_line(shown.stderr) == "cocaine-admin: info ghost: no app named 'ghost'"

    deleted = admin("--json", "delete", "ghost", "echo", endpoint=daemon.management)
    assert deleted.returncode == 1
    assert json.loads(deleted.stdout) == {"ghost": {"error": "no app named 'ghost'"},
                                          "echo": {"deleted": True}}
    assert one_line(deleted.stderr) == "cocaine-admin: delete ghost: no app named 'ghost'"
    assert daemon.info()["apps"] == {}


def test_endpoint_from_the_environment(daemon):
    result = admin("info", env={"COCAINE_ENDPOINT": daemon.management})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("node ") and ", 0 apps" in result.stdout


# -- unreachable, silent and erring daemons -------------------------------------------------------
def test_unreachable_endpoint_exits_3_within_the_timeout():
    address = endpoint()  # nothing listens there
    started = time.monotonic()
    result = admin("--timeout", "0.5", "info", endpoint=address)
    assert time.monotonic() - started < 10  # 0.5 s plus the interpreter's start
    assert result.returncode == 3
    assert result.stdout == ""
    assert one_line(result.stderr) == f"cocaine-admin: no answer from {address} within 0.5 s"


def test_a_daemon_that_never_answers_exits_3(zmq_context):
    address = endpoint()
    silent = zmq_context.socket(zmq.ROUTER)  # accepts the connection and the request, answers nothing
    silent.linger = 0
    silent.bind(address)
    try:
        result = admin("--timeout", "0.5", "delete", "echo", env={"COCAINE_ENDPOINT": address})
    finally:
        silent.close(0)
    assert result.returncode == 3
    assert one_line(result.stderr) == f"cocaine-admin: no answer from {address} within 0.5 s"


def test_a_request_level_error_exits_1_with_the_daemons_message(zmq_context):
    address = endpoint()
    fake = zmq_context.socket(zmq.REP)
    fake.linger = 0
    fake.rcvtimeo = RUN_TIMEOUT * 1000
    fake.bind(address)
    proc = subprocess.Popen([*CLI, "--endpoint", address, "info", "a", "b"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        # The request as the daemon sees it: version 2, info with the app filter.
        assert json.loads(fake.recv()) == {"version": 2, "action": "info", "apps": ["a", "b"]}
        fake.send_json({"error": "storage is on fire"})
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        fake.close(0)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1
    assert stdout == ""
    assert one_line(stderr) == f"cocaine-admin: {address} refused the request: storage is on fire"


def test_debug_variable_shows_the_traceback():
    result = admin("--timeout", "0.2", "info", endpoint=endpoint(), env={"COCAINE_DEBUG": "1"})
    assert result.returncode == 3
    assert "Traceback" in result.stderr and "Unreachable" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("cocaine-admin: no answer from ")


# -- problems found before any request ------------------------------------------------------------
def test_a_missing_manifest_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    result = admin("--timeout", "0.2", "create", "echo", str(missing), endpoint=endpoint())
    assert result.returncode == 1
    assert one_line(result.stderr) == (f"cocaine-admin: cannot read manifest {missing}: "
                                       "No such file or directory")


def test_a_manifest_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"type": "python",\n')
    result = admin("--timeout", "0.2", "create", "echo", str(path), endpoint=endpoint())
    assert result.returncode == 1
    assert one_line(result.stderr).startswith(f"cocaine-admin: manifest {path} is not valid JSON: ")


@pytest.mark.parametrize("args", [["--endpoint", "localhost:5000", "info"], ["--timeout", "0", "info"],
                                  ["delete"], ["frobnicate"]])
def test_a_bad_command_line_exits_2(args):
    result = admin(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("cocaine-admin: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.endswith(" --help)\n") and result.stdout == ""


def test_a_usage_error_names_the_option_and_the_help_to_read():
    result = admin("info", "--bogus")
    assert (result.returncode, result.stderr) == (2, "cocaine-admin: No such option: --bogus "
                                                     "(see cocaine-admin info --help)\n")


def test_installed_script_and_module_entry_points():
    script = Path(sys.executable).with_name("cocaine-admin")
    if not script.exists():
        pytest.skip("cocaine-admin is not installed next to this interpreter")
    for argv in ([str(script), "--version"], [sys.executable, "-m", "cocaine.cli", "--version"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "cocaine-admin 0.1.0\n"


@pytest.mark.parametrize(("args", "expected"), [
    ("app.py", "/base/app.py"),
    ("sub/../lib/app.py", "/base/lib/app.py"),
    ("local://app.py", "local:///base/app.py"),
    ("local:///srv/app.py", "local:///srv/app.py"),
    ("/srv/app.py", "/srv/app.py"),
    ("http://example.org/app.py", "http://example.org/app.py"),
    ("", ""),
])
def test_resolve_args(args, expected):
    from cocaine.cli.manifest import resolve_args

    assert resolve_args(args, "/base") == expected
