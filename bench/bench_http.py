"""HTTP: the Python echo app over cocaine's ``http-server`` against uWSGI and gunicorn, in one run.

uWSGI and gunicorn get 2 worker processes; cocaine sizes its own pool (``--workers`` fixes it). All
get the same load:
``wrk`` (Debian's), keep-alive, 64 connections, 2 threads, POST of a 16-byte body that the app
echoes. Reported per server:
requests/s, latency p50/p99/p99.9 and mean as wrk reports them, p99 and mean uncorrected (each
request once: wrk adds samples for coordinated omission, see :func:`uncorrect`), a connection's
cycle per request (64 / rate: the mean exceeds what wrk timed when wrk spends untimed time per
request, such as reconnecting), non-2xx and socket errors, and the CPU time the server's whole
process tree (master, workers, cocained) spent per request. Rounds alternate the servers, in
reversed order every other round; medians.

- **cocaine**: ``cocained`` hosting ``bench/echo_app.py`` behind ``http-server``, with the engine's
  defaults (the daemon is a process of its own, its reactor thread does the HTTP; the pool takes as
  many workers as the work needs by the job time: one, for an echo, docs/pools.md).
- **uwsgi**: ``pyuwsgi`` from PyPI, ``bench/echo_wsgi.py``, ``--processes 2 --master``, with
  ``--http-socket`` (which answers and closes: no keep-alive, wrk reconnects), with
  ``--http11-socket`` (keep-alive, but a worker serves one connection until it closes), and, as
  **uwsgi-router**, with ``--http --http-keepalive``: uWSGI's HTTP router process in front of its
  workers, keeping the clients' connections alive (the shape of cocaine's daemon and workers).
- **gunicorn**: sync workers, ``-w 2`` (a sync worker closes each connection after its response).
- **cocaine-close**: cocaine with ``Connection: close`` on every request, so that wrk reconnects
  after each response as it must with uWSGI ``--http-socket`` (not run unless asked for).
- ``--concurrency 8,32``: one more cocaine server per value, with that ``engine.concurrency``.
- ``--workers 1,2``: one more cocaine server per value, with a pool of exactly that many workers
  (``pool-limit`` and ``pool-min``; 2: as many as uWSGI's).
- ``--reference PYTHON``: cocaine once more from another checkout's virtualenv, for an A/B.

Usage: .venv/bin/python bench/bench_http.py [--duration 10] [--rounds 1] [--servers cocaine,uwsgi,...]
       [--concurrency 8[,...]] [--workers 1[,2,...]] [--reference /work/main/.venv/bin/python] [--json]
(needs ``wrk`` on PATH and ``pip install pyuwsgi gunicorn`` in the venv)
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_echo import _free_port, _manage
from loadgen import cpu_seconds, stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
CONNECTIONS = 64
BODY = "0123456789abcdef"
SERVERS = {  # name: the option that selects it
    "cocaine": None,
    "uwsgi": "--http-socket",
    "uwsgi-http11": "--http11-socket",
    "uwsgi-router": "--http",
    "gunicorn": None,
    # cocaine with every request asking to close its connection: wrk reconnects after every
    # response, as it must with uWSGI --http-socket, so both latencies count the same part of a cycle
    "cocaine-close": None,
}
LABELS = {"cocaine": "cocaine http-server", "uwsgi": "uwsgi --http-socket", "uwsgi-http11": "uwsgi --http11-socket",
          "uwsgi-router": "uwsgi --http (router)", "gunicorn": "gunicorn sync",
          "cocaine-reference": "cocaine (--reference)", "cocaine-close": "cocaine, Connection: close"}
# done() prints wrk's latency histogram whole: the figures are computed from it, both as wrk
# reports them and without wrk's correction (see uncorrect()).
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = "{BODY}"
wrk.headers["Content-Type"] = "text/plain"
function done(summary, latency, requests)
  io.write(string.format("bench: duration %d requests %d\\n", summary.duration, summary.requests))
  for i = 1, #latency do
    local value, count = latency(i)
    io.write(string.format("latency %d %d\\n", value, count))
  end
end
"""


def wait_http(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until a POST to the server is echoed (its workers are up)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before it was ready")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("POST", "/", body=b"ok")
            response = connection.getresponse()
            if response.status == 200 and response.read() == b"ok":
                return
        except OSError:
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no echo from port {port}")
        time.sleep(0.05)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids.extend(int(p) for p in f.read().split())
        except OSError:
            pass
        i += 1
    return pids


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def run_wrk(port: int, duration: float, script: str) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration:g}s", "-s", script,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    requests = int(re.search(r"(\d+) requests in", out)[1])
    duration, requests = map(int, re.search(r"^bench: duration (\d+) requests (\d+)$", out, re.M).groups())
    corrected = {int(v): int(c) for v, c in re.findall(r"^latency (\d+) (\d+)$", out, re.M)}
    interval = duration // max(1, requests // CONNECTIONS)  # as wrk computes it
    raw = uncorrect(corrected, interval)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "requests": requests, "mean_ms": _mean(corrected), "p50_ms": _percentile(corrected, 50),
            "p99_ms": _percentile(corrected, 99), "p999_ms": _percentile(corrected, 99.9), "max_ms": max(raw) / 1000,
            "raw_mean_ms": _mean(raw), "raw_p99_ms": _percentile(raw, 99), "raw_p999_ms": _percentile(raw, 99.9),
            # a connection's whole cycle per request; above mean_ms when wrk spends time it does not
            # count, such as reconnecting after every response (uWSGI --http-socket)
            "cycle_ms": CONNECTIONS / rps * 1000,
            "non_2xx": int(non2xx[1]) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def uncorrect(corrected: dict[int, int], interval: int) -> dict[int, int]:
    """wrk's latency histogram (microseconds: count) as measured, each request once.

    At the end of a run wrk "corrects" its histogram for coordinated omission: each latency n of
    at least twice ``interval`` (a connection's cycle per request: duration / (requests /
    connections)) adds one more sample at n - interval, n - 2 interval, ... while above
    ``interval``; wrk's percentiles and mean are those of the corrected histogram. The samples a
    value m receives are the counts measured at m + interval, m + 2 interval, ..., so the measured
    counts come back from the top down."""
    top = max(corrected, default=0)
    raw = [0] * (top + interval + 1)
    added = [0] * (top + interval + 1)  # added[m]: the samples m received, the raw counts above it
    for m in range(top, -1, -1):
        count = corrected.get(m, 0)
        if m > interval:
            added[m] = raw[m + interval] + added[m + interval]
            count -= added[m]
        raw[m] = count
    return {m: count for m, count in enumerate(raw) if count}


def _percentile(histogram: dict[int, int], percent: float) -> float:
    """In milliseconds, as wrk's: the lowest value with at least ``percent`` of the samples at or below it."""
    target, seen = math.floor(sum(histogram.values()) * percent / 100 + 1), 0  # wrk's rank: round(p n + 0.5)
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= target:
            return value / 1000
    return 0.0


def _mean(histogram: dict[int, int]) -> float:
    return sum(value * count for value, count in histogram.items()) / max(1, sum(histogram.values())) / 1000


def measure(name: str, command: list[str], port: int, duration: float, script: str, setup=None, cwd=None) -> dict:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    try:
        if setup is not None:
            setup()
        wait_http(port, proc)
        run_wrk(port, 1, script)  # warm-up
        pids = tree(proc.pid)
        before = tree_cpu(pids)
        result = run_wrk(port, duration, script)
        result["cpu_us_per_request"] = (tree_cpu(pids) - before) / max(1, result["requests"]) * 1e6
        result["processes"] = len(pids)
        return result
    finally:
        stop_process(proc, timeout=20)


def run_cocaine(duration: float, script: str, tmp: str, python: str = sys.executable,
                concurrency: int | None = None, workers: int | None = None) -> dict:
    """cocained with the engine's defaults, but for ``concurrency`` and, if ``workers``, a pool of
    exactly that many (``pool-limit`` and ``pool-min``)."""
    management = f"tcp://127.0.0.1:{_free_port()}"
    port = _free_port()
    engine = {} if concurrency is None else {"concurrency": concurrency}
    if workers is not None:
        engine.update({"pool-limit": workers, "pool-min": workers})
    manifest = {"type": "python", "args": os.path.join(HERE, "echo_app.py"), "engine": engine,
                "tasks": {"echo": {"type": "http-server", "endpoint": f"127.0.0.1:{port}"}}}
    command = [python, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/storage",
               "--runtime-dir", f"{tmp}/run", "--management", management, "--log-level", "warning"]
    return measure("cocaine", command, port, duration, script,
                   setup=lambda: _manage(management, {"version": 2, "action": "create", "apps": {"echo": manifest}}))


def run_uwsgi(duration: float, script: str, option: str) -> dict:
    port = _free_port()
    command = [os.path.join(BIN, "uwsgi"), option, f"127.0.0.1:{port}", "--wsgi-file", "echo_wsgi.py",
               "--callable", "app", "--processes", "2", "--master", "--disable-logging", "--listen", "1024"]
    if option == "--http":  # the router keeps its clients' connections alive only when told to
        command.append("--http-keepalive")
    return measure("uwsgi", command, port, duration, script, cwd=HERE)


def run_gunicorn(duration: float, script: str) -> dict:
    port = _free_port()
    command = [os.path.join(BIN, "gunicorn"), "--workers", "2", "--worker-class", "sync", "--bind",
               f"127.0.0.1:{port}", "--backlog", "1024", "--log-level", "warning", "echo_wsgi:app"]
    return measure("gunicorn", command, port, duration, script, cwd=HERE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per server and round")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times (medians)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--servers", default="cocaine,uwsgi,uwsgi-http11,uwsgi-router,gunicorn",
                        help=f"which servers to run, comma-separated, of {','.join(SERVERS)} (default: %(default)s)")
    parser.add_argument("--concurrency", default="",
                        help="comma-separated values of the app's engine.concurrency (jobs in flight per worker): "
                             "one more cocaine run per value (cocaine itself has the engine's default)")
    parser.add_argument("--workers", default="",
                        help="comma-separated pool sizes: one more cocaine run per value, with that pool-limit "
                             "and pool-min (2: as many workers as uWSGI's; cocaine itself sizes its pool)")
    parser.add_argument("--reference", metavar="PYTHON",
                        help="also run cocaine from this interpreter (another checkout's venv), alternating "
                             "with ours, for a side-by-side A/B")
    args = parser.parse_args()
    names = args.servers.split(",")
    unknown = set(names) - set(SERVERS)
    if unknown:
        sys.exit(f"--servers: unknown {sorted(unknown)}: choose from {','.join(SERVERS)}")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    for tool in ("uwsgi", "gunicorn"):
        if not os.path.exists(os.path.join(BIN, tool)):
            sys.exit(f"{tool} is needed: {sys.executable} -m pip install pyuwsgi gunicorn")
    servers = {name: SERVERS[name] for name in names}
    for value in (int(value) for value in args.concurrency.split(",") if value):
        servers[f"cocaine-concurrency-{value}"] = value
        LABELS[f"cocaine-concurrency-{value}"] = f"cocaine, concurrency {value}"
    for value in (int(value) for value in args.workers.split(",") if value):
        servers[f"cocaine-workers-{value}"] = value
        LABELS[f"cocaine-workers-{value}"] = f"cocaine, {value} worker(s)"
    if args.reference:
        servers["cocaine-reference"] = args.reference
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-http-") as tmp:
        script, closing = os.path.join(tmp, "post.lua"), os.path.join(tmp, "post-close.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        with open(closing, "w") as f:
            f.write(WRK_SCRIPT + 'wrk.headers["Connection"] = "close"\n')
        order = list(servers)
        for round_ in range(args.rounds):
            for name in order:
                option = servers[name]
                if name == "cocaine":
                    result = run_cocaine(args.duration, script, f"{tmp}/cocaine-{round_}")
                elif name == "cocaine-close":
                    result = run_cocaine(args.duration, closing, f"{tmp}/close-{round_}")
                elif name.startswith("cocaine-concurrency-"):
                    result = run_cocaine(args.duration, script, f"{tmp}/{name}-{round_}", concurrency=option)
                elif name.startswith("cocaine-workers-"):
                    result = run_cocaine(args.duration, script, f"{tmp}/{name}-{round_}", workers=option)
                elif name == "cocaine-reference":
                    result = run_cocaine(args.duration, script, f"{tmp}/reference-{round_}", python=option)
                elif name.startswith("uwsgi"):
                    result = run_uwsgi(args.duration, script, option)
                else:
                    result = run_gunicorn(args.duration, script)
                result["load_average"] = os.getloadavg()[0]
                runs[name].append(result)
                print(f"round {round_ + 1}: {name}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                      f"p99 {result['p99_ms']:.2f} ms, CPU {result['cpu_us_per_request']:.0f} us/req, "
                      f"load average {result['load_average']:.1f}", file=sys.stderr)
            order.reverse()  # no server always runs first (or right after the same neighbour)
    summary = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
               for name, results in runs.items()}
    ratio = {}  # each cocaine run against uWSGI --http-socket
    if "uwsgi" in summary:
        reference = summary["uwsgi"]
        for name, ours in summary.items():
            if name == "cocaine" or name.startswith(("cocaine-concurrency-", "cocaine-workers-")):
                ratio[name] = {"rps_vs_uwsgi": ours["rps"] / reference["rps"],
                               "p99_vs_uwsgi": ours["p99_ms"] / reference["p99_ms"],
                               "raw_p99_vs_uwsgi": ours["raw_p99_ms"] / reference["raw_p99_ms"]}
    if args.json:
        print(json.dumps({"servers": summary, "rounds": runs, "ratio": ratio}, indent=2))
        return
    print(f"wrk -t2 -c{CONNECTIONS} keep-alive, POST {len(BODY)} bytes echoed, "
          f"{args.duration:g} s x {args.rounds} round(s), medians")
    for name, r in summary.items():
        print(f"{LABELS.get(name, name):26} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  p99.9 {r['p999_ms']:7.2f} ms  mean {r['mean_ms']:6.2f} ms  "
              f"(uncorrected: p99 {r['raw_p99_ms']:6.2f} ms, mean {r['raw_mean_ms']:6.2f} ms)  "
              f"cycle {r['cycle_ms']:6.2f} ms  CPU {r['cpu_us_per_request']:6.1f} us/req  non-2xx {r['non_2xx']:.0f}  "
              f"socket errors {r['socket_errors']:.0f}  load average {r['load_average']:.1f}")
    for name, r in ratio.items():
        print(f"{LABELS.get(name, name)} / uwsgi --http-socket: requests/s {r['rps_vs_uwsgi']:.2f}x, "
              f"p99 {r['p99_vs_uwsgi']:.2f}x (uncorrected {r['raw_p99_vs_uwsgi']:.2f}x; lower p99 is better)")

if __name__ == "__main__":
    main()
