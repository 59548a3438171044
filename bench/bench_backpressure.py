"""Backpressure on streamed responses: a handler streams a huge response (the conformance app's
``flood`` task, 64 KiB chunks as fast as it can) to a client that reads at a set rate, over each
driver whose responses stream; reports whether it completed, the rate reached, and how much the
daemon's and the worker's resident memory grew (peak against before, from /proc).

Usage: .venv/bin/python bench/bench_backpressure.py [--size-mib 1024] [--rate-mib 10]
           [--language python|cpp|perl|js] [--driver raw-socket-server ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_echo import _free_port, _manage  # noqa: E402
from loadgen import stop_process  # noqa: E402
from runtimes import APP_FILES, CONFORMANCE, build_cpp_app  # noqa: E402
from slow_readers import flood_task, MIB, READERS  # noqa: E402
from support import MemoryWatch  # noqa: E402


def app_args(language: str, tmp: str) -> str:
    if language == "cpp":
        return str(build_cpp_app(CONFORMANCE / "cpp" / "app.cpp", Path(tmp) / "cpp"))
    return str(CONFORMANCE / language / APP_FILES[language])


def run(driver: str, language: str, size: int, rate: float) -> dict:
    """One daemon, one app with the flood task behind ``driver`` on one worker, one slow client."""
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-") as tmp:
        management = f"tcp://127.0.0.1:{_free_port()}"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/storage",
             "--runtime-dir", f"{tmp}/run", "--management", management, "--log-level", "warning"])
        try:
            manifest = {"type": language, "args": app_args(language, tmp), "engine": {"pool-limit": 1},
                        "tasks": {"flood": flood_task(driver, port := _free_port())}}
            reply = _manage(management, {"version": 2, "action": "create", "apps": {"flood": manifest}})
            assert "error" not in reply["flood"], reply
            read = READERS[driver]
            read(port, MIB, 100 * MIB, lambda: None)  # start the worker and warm it up
            info = _manage(management, {"version": 2, "action": "info"})["apps"]["flood"]
            worker = info["pool"]["workers"][0]["pid"]
            watch = MemoryWatch(daemon.pid, worker)
            started = time.monotonic()
            got = read(port, size, rate, watch.sample)
            seconds = time.monotonic() - started
            return {
                "driver": driver, "language": language, "size": size, "received": got, "seconds": round(seconds, 1),
                "rate_mib_s": round(got / seconds / MIB, 2),
                "daemon_rss_mib": [round(watch.before[daemon.pid] / MIB, 1), round(watch.peak[daemon.pid] / MIB, 1)],
                "worker_rss_mib": [round(watch.before[worker] / MIB, 1), round(watch.peak[worker] / MIB, 1)],
                "load_average": os.getloadavg()[0],
            }
        finally:
            stop_process(daemon, timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mib", type=float, default=10.0, help="the client's reading rate, MiB/s")
    parser.add_argument("--language", default="python", choices=list(APP_FILES))
    parser.add_argument("--driver", action="append", choices=list(READERS), help="default: every one")
    parser.add_argument("--json", action="store_true", help="print one JSON object per driver")
    args = parser.parse_args()
    for driver in args.driver or READERS:
        result = run(driver, args.language, args.size_mib * MIB, args.rate_mib * MIB)
        if args.json:
            print(json.dumps(result))
            continue
        (d0, d1), (w0, w1) = result["daemon_rss_mib"], result["worker_rss_mib"]
        complete = "complete" if result["received"] == result["size"] else f"INCOMPLETE ({result['received']} bytes)"
        print(f"{driver:18} {args.language:6} {result['size'] // MIB} MiB {complete} in {result['seconds']} s "
              f"({result['rate_mib_s']} MiB/s); daemon RSS {d0} -> peak {d1} MiB (+{d1 - d0:.1f}), "
              f"worker RSS {w0} -> peak {w1} MiB (+{w1 - w0:.1f}); load {result['load_average']:.1f}")


if __name__ == "__main__":
    main()
