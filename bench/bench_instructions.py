"""Instructions per request of a broker process, counted by valgrind: the figure that does not swing.

CPU time per request swings by 30% from run to run on these shared 2-vCPU VMs, more than most steps
of the hot path save. The number of instructions a process executes for the same work does not:
two runs of this script agree within about 1.5%. Each broker runs twice under ``valgrind
--tool=cachegrind --cache-sim=no``, serving N1 requests once and N2 once (64 in flight, after 500
to warm up), and the figure is (I(N2) - I(N1)) / (N2 - N1): the user-space instructions of all the
broker process's threads per request, its start and stop cancelled out.

Not counted: the workers (other processes, not traced) and the kernel's work (system calls), which
the CPU-time benchmarks include. Under valgrind the broker runs some 20 times slower, so its reactor
rounds carry more requests each than at full speed: what each round costs is shared by more of them.

- ``cocaine``: cocained with the Python echo app behind ``zeromq-server``, every feature on as in
  bench_echo.py (deadlines, statistics, pubsub, metrics), 2 process workers, ``concurrency`` 32.
- ``http``: the same app behind ``http-server`` as in bench_http.py, but at ``concurrency`` 8 (the
  default until 2026-11-29, kept so that the figures stay comparable), a keep-alive client of 64
  connections posting 16 bytes.
- ``baseline``: bench/baseline_broker.py, the hand-written pyzmq broker of bench_echo.py.

Usage: .venv/bin/python bench/bench_instructions.py [--brokers cocaine,http,baseline]
                                                    [--requests 1000,9000] [--python PYTHON ...]
(needs valgrind: apt-get install valgrind; ``--python`` adds another checkout's interpreter, for an A/B)
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import zmq

from bench_echo import REQUEST_TIMEOUT, _free_port, _manage
from loadgen import wait_ready

from cocaine.core.transport import send_frames

HERE = os.path.dirname(os.path.abspath(__file__))
IN_FLIGHT = 64
WARM_UP = 500
BODY = b"0123456789abcdef"
HTTP_REQUEST = (b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(BODY), BODY))
#: Valgrind slows everything down: the daemon gets more time to start workers and hear from them.
SLOW_ENGINE = {"startup-timeout": 60, "heartbeat-timeout": 120}


def zeromq_load(endpoint: str, requests: int) -> None:
    """``requests`` echo requests over one DEALER, IN_FLIGHT at a time, each answer checked."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 120_000
    sock.connect(endpoint)
    try:
        sent = 0
        for _ in range(min(IN_FLIGHT, requests)):
            send_frames(sock, [b"", BODY])
            sent += 1
        for _ in range(requests):
            reply = sock.recv_multipart()
            if reply != [b"", b"ok", BODY]:
                raise RuntimeError(f"unexpected reply {reply!r}")
            if sent < requests:
                send_frames(sock, [b"", BODY])
                sent += 1
    finally:
        sock.close()


def http_load(port: int, requests: int) -> None:
    """``requests`` POSTs over IN_FLIGHT keep-alive connections, one request at a time on each."""
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    sent = answered = 0
    try:
        for _ in range(min(IN_FLIGHT, requests)):
            connection = socket.create_connection(("127.0.0.1", port), timeout=120)
            selector.register(connection, selectors.EVENT_READ)
            pending[connection] = b""
            connection.sendall(HTTP_REQUEST)
            sent += 1
        while answered < requests:
            events = selector.select(120)
            if not events:
                raise TimeoutError("no HTTP answer within 120 s")
            for key, _ in events:
                connection = key.fileobj
                data = connection.recv(65536)
                if not data:
                    raise RuntimeError("the server closed a connection")
                buffer = pending[connection] + data
                while True:  # every whole response in the buffer
                    head, found, rest = buffer.partition(b"\r\n\r\n")
                    if not found:
                        break
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
                    if len(rest) < length:
                        break
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(f"unexpected response {head[:40]!r}")
                    buffer = rest[length:]
                    answered += 1
                    if sent < requests:
                        connection.sendall(HTTP_REQUEST)
                        sent += 1
                pending[connection] = buffer
    finally:
        for connection in pending:
            connection.close()


def counted(command: list[str], tmp: str) -> subprocess.Popen:
    return subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                             f"--cachegrind-out-file={tmp}/cachegrind.out", *command],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def count(process: subprocess.Popen, serve) -> int:
    """Run ``serve()`` against a process started by :func:`counted`, stop the process, and return
    the instructions valgrind counted."""
    try:
        serve()
    except BaseException:
        process.kill()
        process.communicate()
        raise
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    match = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind: {err[-2000:]}")
    return int(match[1].replace(",", ""))


def serve_zeromq(endpoint: str, process: subprocess.Popen, requests: int) -> None:
    wait_ready(endpoint, timeout=120, process=process)
    zeromq_load(endpoint, WARM_UP)
    zeromq_load(endpoint, requests)


def run_cocaine(python: str, driver: str, requests: int) -> int:
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-") as tmp:
        management = f"tcp://127.0.0.1:{_free_port()}"
        port = _free_port()
        if driver == "http":
            task, concurrency = {"type": "http-server", "endpoint": f"127.0.0.1:{port}"}, 8
        else:
            task, concurrency = {"type": "zeromq-server", "endpoint": f"tcp://127.0.0.1:{port}"}, 32
        manifest = {"type": "python", "args": os.path.join(HERE, "echo_app.py"),
                    "engine": {"backend": "process", "pool-limit": 2, "pool-min": 2, "concurrency": concurrency,
                               "queue-limit": 10_000, "request-timeout": REQUEST_TIMEOUT, **SLOW_ENGINE},
                    "pubsub": {"endpoint": f"tcp://127.0.0.1:{_free_port()}"},
                    "tasks": {"echo": task}}
        daemon = counted([python, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/storage",
                          "--runtime-dir", f"{tmp}/run", "--management", management, "--log-level", "warning",
                          "--metrics", f"127.0.0.1:{_free_port()}"], tmp)

        def serve() -> None:
            _create(management, manifest, daemon)
            if driver == "http":
                _wait_http(port, daemon)
                http_load(port, WARM_UP)
                http_load(port, requests)
            else:
                serve_zeromq(task["endpoint"], daemon, requests)

        return count(daemon, serve)


def run_baseline(python: str, requests: int) -> int:
    with tempfile.TemporaryDirectory(prefix="cocaine-baseline-") as tmp:
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        broker = counted([python, os.path.join(HERE, "baseline_broker.py"), endpoint, f"ipc://{tmp}/backend"], tmp)
        return count(broker, lambda: serve_zeromq(endpoint, broker, requests))


def _create(management: str, manifest: dict, daemon: subprocess.Popen) -> None:
    """Create the app once the daemon (slow under valgrind) answers its management socket."""
    deadline = time.monotonic() + 120
    while True:
        if daemon.poll() is not None:
            raise RuntimeError(f"cocained exited with status {daemon.returncode}")
        try:
            answer = _manage(management, {"version": 2, "action": "create", "apps": {"echo": manifest}})
        except (zmq.ZMQError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        if "error" in answer:
            raise RuntimeError(f"cocained refused the app: {answer}")
        return


def _wait_http(port: int, daemon: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            http_load(port, 1)
            return
        except OSError:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def per_request(python: str, broker: str, small: int, large: int) -> float:
    run = (lambda n: run_baseline(python, n)) if broker == "baseline" else (lambda n: run_cocaine(python, broker, n))
    return (run(large) - run(small)) / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="cocaine,http,baseline")
    parser.add_argument("--requests", default="1000,9000", help="N1,N2: the two runs' requests")
    parser.add_argument("--python", action="append", default=[],
                        help="another checkout's interpreter to count as well (repeatable)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench_instructions.py needs valgrind (apt-get install valgrind)")
    small, large = map(int, args.requests.split(","))
    for python in [sys.executable, *args.python]:
        for broker in args.brokers.split(","):
            if broker == "baseline" and python != sys.executable:
                continue  # the baseline is the same code whichever checkout runs it
            figure = per_request(python, broker, small, large)
            print(f"{broker:9} {figure:9,.0f} instructions/request  ({python})", flush=True)


if __name__ == "__main__":
    main()
