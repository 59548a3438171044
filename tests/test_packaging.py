"""The packages install from wheels into a fresh environment, and a third-party driver plugs in.

`pip install cocaine-core cocaine-drivers` must give a working daemon; a separately built
distribution (tests/plugins/cocaine-line-server) adds a driver through its entry point alone.
"""

import socket
import subprocess
import sys
import venv

import pytest

from support import ROOT, Daemon, free_port, python_app

PACKAGES = ["packages/cocaine-core", "packages/cocaine-python", "packages/cocaine-drivers",
            "tests/plugins/cocaine-line-server"]


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packaging")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), *(str(ROOT / p) for p in PACKAGES)], check=True, timeout=300)
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--find-links", str(wheels),
                    "cocaine-core", "cocaine-drivers", "cocaine-line-server"], check=True, timeout=600)
    return python


@pytest.mark.timeout(900)
def test_wheels_give_a_working_daemon_with_a_third_party_driver(fresh_python, tmp_path, zmq_context):
    port = free_port()
    app = python_app(tmp_path, "def shout(request):\n    return request.body.upper()\n")
    daemon = Daemon(tmp_path / "d", zmq_context, python=fresh_python).start()
    try:
        daemon.create("shouter", {"type": "python", "args": app,
                                  "tasks": {"shout": {"type": "line-server", "port": port}}})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"hello\nworld\n")
            reader = conn.makefile("rb")
            assert reader.readline() == b"HELLO\n"
            assert reader.readline() == b"WORLD\n"
        info = daemon.info("shouter")
        assert info["tasks"]["shout"]["type"] == "line-server"
        assert info["tasks"]["shout"]["stats"]["succeeded"] == 2
        # The plugin validates its own keys, with the same kind of error as the built-in drivers.
        reply = daemon.request({"version": 2, "action": "create", "apps": {"bad": {
            "type": "python", "args": app, "tasks": {"shout": {"type": "line-server", "port": 0}}}}})
        assert "tasks.shout.port: expected an integer from 1 to 65535, got 0" in reply["bad"]["error"]
        assert daemon.stop() == 0
    finally:
        daemon.close()
