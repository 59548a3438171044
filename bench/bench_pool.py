"""The cost and speed of the self-managing pool:

- requests/s at 64 in flight with `concurrency` 1 (one job per worker at a time) and the default (8),
  two workers, Python echo app behind `zeromq-server`;
- time from a burst's arrival to the pool's growth: a cold app (`pool-min` 0, `pool-limit` 4) gets
  64 requests of 50 ms work at once; we report when the first worker says hello (first answer) and
  when the pool has reached its limit with every worker ready.

Usage: .venv/bin/python bench/bench_pool.py [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import zmq

from bench_echo import _free_port, _manage, run_cocaine
from cocaine.core.manifest import EngineConfig
from loadgen import stop_process


def burst_growth(requests: int = 64, work: float = 0.05, pool_limit: int = 4) -> dict:
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-") as tmp:
        management = f"tcp://127.0.0.1:{_free_port()}"
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        app = os.path.join(tmp, "app.py")
        with open(app, "w") as f:
            f.write("import time\n\ndef work(request):\n    time.sleep(float(request.body))\n    return b'ok'\n")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/storage",
             "--runtime-dir", f"{tmp}/run", "--management", management, "--log-level", "warning"])
        try:
            manifest = {"type": "python", "args": app,
                        "engine": {"pool-limit": pool_limit, "concurrency": 1, "queue-limit": 1000},
                        "tasks": {"work": {"type": "zeromq-server", "endpoint": endpoint}}}
            _manage(management, {"version": 2, "action": "create", "apps": {"bench": manifest}})
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(endpoint)
            started = time.perf_counter()
            for _ in range(requests):
                sock.send_multipart([b"", str(work).encode()])
            first_answer = full_pool = None
            answered = 0
            deadline = started + 60
            while answered < requests and time.perf_counter() < deadline:
                if sock.poll(5):
                    while sock.poll(0):
                        sock.recv_multipart()
                        answered += 1
                        first_answer = first_answer or time.perf_counter() - started
                if full_pool is None:
                    pool = _manage(management, {"version": 2, "action": "info"})["apps"]["bench"]["pool"]
                    if pool["total"] == pool_limit and not pool["starting"]:
                        full_pool = time.perf_counter() - started
            sock.close(0)
            return {"requests": requests, "answered": answered, "first_answer_ms": (first_answer or 0) * 1000,
                    "pool_full_ms": (full_pool or float("nan")) * 1000,
                    "all_answered_ms": (time.perf_counter() - started) * 1000,
                    "ideal_ms": requests * work / pool_limit * 1000}
        finally:
            stop_process(daemon, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    default = EngineConfig().concurrency
    for concurrency in (1, default):
        result = run_cocaine(args.duration, 2, concurrency)["throughput"]
        print(f"concurrency {concurrency:2}: {result['rps']:9,.0f} req/s at 64 in flight, "
              f"broker CPU {result['broker_cpu_us']:.1f} us/request")
    growth = burst_growth()
    print(f"burst of {growth['requests']} x 50 ms jobs on a cold app (pool-limit 4): first answer after "
          f"{growth['first_answer_ms']:.0f} ms, pool full and ready after {growth['pool_full_ms']:.0f} ms, "
          f"all answered after {growth['all_answered_ms']:.0f} ms (ideal with 4 warm workers: "
          f"{growth['ideal_ms']:.0f} ms)")


if __name__ == "__main__":
    main()
