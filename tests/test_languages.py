"""Languages from plugins: a runtime that is missing (no interpreter, a module not installed, no
compiler) is refused when the app is created, with the reason, instead of failing every worker."""

import re

import pytest

from runtimes import CONFORMANCE, app_source, require_runtime, serve_tasks
from support import ROOT

TASKS = {"echo": {"type": "zeromq-server", "endpoint": "tcp://127.0.0.1:1"}}


def create_error(daemon, language: str, args: str) -> str:
    reply = daemon.request({"version": 2, "action": "create",
                            "apps": {"app": {"type": language, "args": args, "tasks": TASKS}}})
    assert "app" not in daemon.info()["apps"]  # nothing started, nothing to crash-loop
    return reply["app"]["error"]


@pytest.fixture
def started(make_daemon):
    return lambda: make_daemon().start()


def test_no_node(monkeypatch, started):
    monkeypatch.setenv("COCAINE_NODE", "/nonexistent/node")
    error = create_error(started(), "js", str(CONFORMANCE / "js" / "app.js"))
    assert error.startswith("app 'app': type 'js': cannot run /nonexistent/node (Node.js 18+ and the npm packages")
    assert "npm ci" in error


def test_a_perl_without_the_modules(monkeypatch, started, tmp_path):
    require_runtime("perl")
    # A real perl whose module search fails for ZMQ::FFI, as on a machine without libzmq-ffi-perl.
    (tmp_path / "Hide.pm").write_text(
        "package Hide;\n"
        "unshift @INC, sub { die \"Can't locate $_[1] in \\@INC (hidden by the test)\\n\" if $_[1] eq 'ZMQ/FFI.pm'; return };\n"
        "1;\n")
    monkeypatch.setenv("PERL5OPT", f"-I{tmp_path} -MHide")
    error = create_error(started(), "perl", str(CONFORMANCE / "perl" / "app.pl"))
    assert error == ("app 'app': type 'perl': the runtime is not usable (perl with ZMQ::FFI and Data::MessagePack; "
                     "Debian: libzmq-ffi-perl libdata-messagepack-perl): Can't locate ZMQ/FFI.pm in @INC "
                     "(hidden by the test)")


def test_no_compiler(monkeypatch, started, tmp_path):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    monkeypatch.setenv("COCAINE_CPP_CACHE", str(tmp_path / "cache"))  # nothing built yet
    library = tmp_path / "app.so"
    library.write_bytes(b"")
    error = create_error(started(), "cpp", str(library))
    assert error.startswith("app 'app': type 'cpp': cannot build the C++ worker host (needs g++ and libzmq3-dev): ")
    assert "/nonexistent/g++" in error


@pytest.mark.parametrize("language", ["perl", "js"])
def test_perl_and_js_cannot_run_as_threads(daemon, language):
    require_runtime(language)
    app = str(CONFORMANCE / language / ("app.pl" if language == "perl" else "app.js"))
    reply = daemon.request({"version": 2, "action": "create", "apps": {"app": {
        "type": language, "args": app, "engine": {"backend": "thread"}, "tasks": TASKS}}})
    assert f"engine.backend: the {language} language cannot run workers as threads" in reply["app"]["error"]


@pytest.mark.parametrize("language, args, expected", [
    ("cpp", "{tmp}/app.cpp", "args: expected a file ending in .so"),
    ("perl", "relative/app.pl", "args: expected an absolute path or local:///absolute/path"),
    ("js", "/no/such/app.js", "(no such file), got '/no/such/app.js'"),
])
def test_args_is_checked_like_python(daemon, tmp_path, language, args, expected):
    (tmp_path / "app.cpp").write_text("")
    assert expected in create_error(daemon, language, args.format(tmp=tmp_path))


def test_a_js_app_can_be_an_es_module(daemon, tmp_path):
    require_runtime("js")
    app = tmp_path / "app.mjs"
    app.write_text("export const shout = (request) => request.body.toString().toUpperCase();\n"
                   "export async function* slowly() { yield 'a'; await new Promise((r) => setTimeout(r, 10)); yield 'b'; }\n")
    call = serve_tasks(daemon, "esm", "js", str(app), ["shout", "slowly"])
    assert call("shout", b"hi") == [b"ok", b"HI"]
    assert call("slowly") == [b"ok", b"a", b"b"]


@pytest.mark.parametrize("language, page, name", [("cpp", "cpp.md", "app.cpp"), ("perl", "perl.md", "app.pl"),
                                                  ("js", "js.md", "app.js")], ids=["cpp", "perl", "js"])
def test_doc_example(daemon, tmp_path, language, page, name):
    """The example app at the top of each language's page works as documented."""
    require_runtime(language)
    source = re.search(rf"```{language}\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S).group(1)
    call = serve_tasks(daemon, "documented", language, app_source(language, tmp_path, source, name), ["echo", "count"])
    assert call("echo", b"hi") == [b"ok", b"hi"]
    assert call("count", b"2") == [b"ok", b"1\n", b"2\n"]
    assert call("count", b"") == [b"ok", b"1\n", b"2\n", b"3\n"]
