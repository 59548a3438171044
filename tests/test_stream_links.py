"""Python workers' stream links (docs/protocol.md, "Stream link") behind a real daemon: a worker
that breaks its link is retired, its job answered, and the app goes on with a new worker."""

import pytest

from runtimes import serve_tasks
from support import wait_for

pytestmark = pytest.mark.timeout(60)

APP = '''
import os
import socket
import stat


def _link():
    """The worker's stream link: the only Unix stream socket of a process worker."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            return sock
        sock.close()
    raise RuntimeError("no stream link")


def garble(request):
    _link().sendall(b"\\xc1")  # a byte msgpack never uses: the engine can no longer split the stream
    return b"too late"


def stall(request):
    _link().sendall(b"\\xc6\\xff\\xff\\xff\\xff")  # a 4 GiB bin begins: what follows is read as its bytes
    return b"never read"


def echo(request):
    return request.body
'''


def test_a_worker_that_breaks_its_stream_link_is_retired_and_its_job_answered(module_daemon, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    call = serve_tasks(module_daemon, "garbler", "python", str(tmp_path / "app.py"), ["garble", "echo"],
                       engine={"pool-limit": 1})
    assert call("echo", b"before") == [b"ok", b"before"]
    status, code, message = call("garble", b"")
    assert (status, code) == (b"error", b"500")
    assert b"broke its stream link" in message and b"not msgpack" in message
    wait_for(lambda: module_daemon.info("garbler")["pool"]["exits"].get("protocol-error") == 1,
             message="the worker's exit counted as a protocol error")
    assert call("echo", b"after") == [b"ok", b"after"]  # a new worker


def test_a_worker_whose_stream_link_stops_making_whole_messages_is_retired_after_heartbeat_timeout(
        module_daemon, tmp_path):
    """Its heartbeats go on, but inside a message that never ends: to the engine it is silent."""
    (tmp_path / "app.py").write_text(APP)
    call = serve_tasks(module_daemon, "staller", "python", str(tmp_path / "app.py"), ["stall", "echo"],
                       engine={"pool-limit": 1, "heartbeat-timeout": 1})
    status, code, message = call("stall", b"")
    assert (status, code) == (b"error", b"504")
    assert b"heartbeat-timeout" in message
    assert call("echo", b"after") == [b"ok", b"after"]
