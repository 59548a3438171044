"""Requests/s (64 in flight) and latency (1 in flight) of a Python echo app behind `zeromq-server`,
against the hand-written baseline broker driving the same Python workers, in one run.

cocaine runs with every feature on: statistics, deadlines (a `request-timeout`), a pubsub endpoint
(publishing `@stats`) and the Prometheus metrics endpoint. `--baseline-worker lean` gives the
baseline the lean loop of baseline_worker.py instead of cocaine's worker (for context).

Usage: .venv/bin/python bench/bench_echo.py [--duration 5] [--workers 2] [--concurrency 32]
                                            [--baseline-worker cocaine|lean] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

import zmq

from bench_baseline import run_baseline
from loadgen import cpu_seconds, measure_broker, measure_latency, measure_throughput, stop_process, wait_ready

HERE = os.path.dirname(os.path.abspath(__file__))
#: Every job gets a deadline (the engine watches it, the worker checks it); none is ever reached.
REQUEST_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cocaine(duration: float, workers: int, concurrency: int, app_type: str = "python",
                app_args: str = os.path.join(HERE, "echo_app.py"), backend: str = "process",
                inflight: int = 64) -> dict:
    """Start cocained with an echo app (by default the Python one), warm its pool up to
    ``workers``, measure, stop it."""
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-") as tmp:
        management = f"tcp://127.0.0.1:{_free_port()}"
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/storage",
             "--runtime-dir", f"{tmp}/run", "--management", management, "--log-level", "warning",
             "--metrics", f"127.0.0.1:{_free_port()}"])
        try:
            manifest = {
                "type": app_type, "args": app_args,
                "engine": {"backend": backend, "pool-limit": workers, "concurrency": concurrency,
                           "queue-limit": 10_000, "request-timeout": REQUEST_TIMEOUT},
                "pubsub": {"endpoint": f"tcp://127.0.0.1:{_free_port()}"},
                "tasks": {"echo": {"type": "zeromq-server", "endpoint": endpoint}},
            }
            _manage(management, {"version": 2, "action": "create", "apps": {"echo": manifest}})
            wait_ready(endpoint, timeout=20.0, process=daemon)
            # A burst larger than one worker's credit grows the pool to its limit before measuring.
            measure_throughput(endpoint, inflight=workers * concurrency, duration=1.0)
            pool = _manage(management, {"version": 2, "action": "info"})["apps"]["echo"]["pool"]
            # Process workers' own CPU per request (thread workers count in the daemon's).
            pids = [w["pid"] for w in pool["workers"] if w["pid"] and w["pid"] != daemon.pid]
            before = sum(cpu_seconds(pid) for pid in pids)
            throughput = measure_broker(endpoint, daemon.pid, inflight=inflight, duration=duration)
            throughput["workers_cpu_us"] = (sum(cpu_seconds(pid) for pid in pids) - before) / max(
                1, throughput["requests"]) * 1e6 if pids else None
            return {
                "workers": pool["total"],
                "throughput": throughput,
                "latency": measure_latency(endpoint),
            }
        finally:
            stop_process(daemon, timeout=20)


def _manage(endpoint: str, request: dict) -> dict:
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 20_000
    sock.connect(endpoint)
    deadline_tries = 100  # the daemon may still be binding: retry with a fresh socket
    try:
        for _ in range(deadline_tries):
            sock.send_json(request)
            try:
                return sock.recv_json()
            except zmq.Again:
                sock.close(0)
                sock = context.socket(zmq.REQ)
                sock.linger = 0
                sock.rcvtimeo = 200
                sock.connect(endpoint)
        raise TimeoutError(f"cocained at {endpoint} did not answer")
    finally:
        sock.close(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline-worker", choices=("cocaine", "lean"), default="cocaine",
                        help="the baseline's workers: cocaine's Python worker (default) or the lean loop")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    ours = run_cocaine(args.duration, args.workers, args.concurrency)
    base = run_baseline(args.duration, args.baseline_worker)
    ratio = {
        "throughput": ours["throughput"]["rps"] / base["throughput"]["rps"],
        "broker_cpu": base["throughput"]["broker_cpu_us"] / ours["throughput"]["broker_cpu_us"],
        "latency_p50": base["latency"]["p50_us"] / ours["latency"]["p50_us"],
        "total_cpu": total_cpu(base) / total_cpu(ours),
    }
    if args.json:
        print(json.dumps({"cocaine": ours, "baseline": base, "ratio": ratio}, indent=2))
        return
    for name, result in (("cocaine", ours), ("baseline", base)):
        tp, lat = result["throughput"], result["latency"]
        workers = f", workers {tp['workers_cpu_us']:5.1f}" if tp.get("workers_cpu_us") is not None else ""
        print(f"{name:9} {tp['rps']:9,.0f} req/s at 64 in flight ({tp['errors']} errors), "
              f"broker CPU {tp['broker_cpu_us']:5.1f}{workers} us/request   "
              f"1 in flight: p50 {lat['p50_us']:5.0f} us, p99 {lat['p99_us']:6.0f} us")
    print(f"cocaine / baseline: throughput {ratio['throughput']:.2f}x, "
          f"broker CPU efficiency {ratio['broker_cpu']:.2f}x, "
          f"p50 latency {ratio['latency_p50']:.2f}x, broker and workers CPU efficiency {ratio['total_cpu']:.2f}x "
          f"(1.0 = as fast as the baseline)")


def total_cpu(result: dict) -> float:
    """Broker and workers' CPU per request (µs)."""
    throughput = result["throughput"]
    return throughput["broker_cpu_us"] + (throughput.get("workers_cpu_us") or 0.0)


if __name__ == "__main__":
    main()
