"""The packages install from wheels into a fresh environment, and a third-party driver plugs in.

`pip install cocaine-core cocaine-drivers` must give a working daemon; a separately built
distribution (tests/plugins/cocaine-line-server) adds a driver through its entry point alone; the
language distributions carry their runtimes.
"""

import json
import os
import socket
import subprocess
import sys
import venv

import pytest

from runtimes import require_runtime
from support import ROOT, Daemon, free_port, python_app

PACKAGES = ["packages/cocaine-core", "packages/cocaine-python", "packages/cocaine-drivers",
            "packages/cocaine-cli", "tests/plugins/cocaine-line-server", "packages/cocaine-cpp", "packages/cocaine-perl",
            "packages/cocaine-js"]


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
                    "cocaine-core", "cocaine-drivers", "cocaine-line-server", "cocaine-cpp", "cocaine-perl",
                    "cocaine-js"], check=True, timeout=600)
    # The CLI last: its own dependencies (cocaine-core, cocaine-drivers) are declared, not assumed. By
    # its wheel's path: PyPI holds an unrelated "cocaine-cli" of a higher version.
    [cli] = wheels.glob("cocaine_cli-*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", "--find-links", str(wheels), str(cli)], check=True,
                   timeout=600)
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
        admin = os.path.join(os.path.dirname(fresh_python), "cocaine-admin")
        listed = subprocess.run([admin, "--endpoint", daemon.management, "--json", "info", "shouter"],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["apps"]["shouter"]["tasks"]["shout"]["stats"]["succeeded"] == 2
        assert daemon.stop() == 0
    finally:
        daemon.close()


LANGUAGE_CHECKS = r"""
import json, os, pathlib, subprocess, sys
from cocaine.core.errors import ConfigError
from cocaine.core.plugins import Registry
from cocaine.cpp import build
from cocaine.js.language import JsLanguage, RUNTIME as JS_RUNTIME
from cocaine.perl.language import RUNTIME as PERL_RUNTIME

report = {"languages": Registry.load().names("language"),
          "sdk": (build.INCLUDE / "cocaine" / "app.hpp").is_file(),
          "host": build.host().executable.is_file(),  # compiled from the sources in the wheel
          "perl": subprocess.run(["perl", str(PERL_RUNTIME), "--check"], capture_output=True).returncode,
          "js_files": sorted(p.name for p in JS_RUNTIME.iterdir())}
try:
    JsLanguage.check_runtime()
except ConfigError as e:
    report["js_error"] = str(e)
print(json.dumps(report))
"""


@pytest.mark.timeout(900)
def test_language_wheels_carry_their_runtimes(fresh_python, tmp_path):
    # The C++ SDK and host sources, the Perl runtime and the JavaScript runtime (without its npm
    # packages, which the operator installs with npm ci) are package data of their wheels.
    require_runtime("cpp")
    require_runtime("perl")
    env = dict(os.environ, COCAINE_CPP_CACHE=str(tmp_path / "cpp-cache"))
    done = subprocess.run([fresh_python, "-c", LANGUAGE_CHECKS], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["languages"] == ["cpp", "js", "perl", "python"]
    assert report["sdk"] and report["host"] and report["perl"] == 0
    assert report["js_files"] == ["lib", "package-lock.json", "package.json", "worker.js"]
    assert "npm ci --omit=dev --ignore-scripts --prefix" in report["js_error"]
