"""CPU-bound handlers on both backends: each request burns 2 ms of CPU time in the handler
(burn_app.py / burn_app.cpp), 2 workers, 8 requests in flight. On the thread backend Python
handlers hold the GIL, so they share one core with each other and with the daemon; C++ handlers
release it (ctypes) and use both cores. Two cores at 2 ms per request allow at most ~1,000 req/s.
The daemon's CPU use shows it on a busy machine too: on the thread backend it includes the workers.

Usage: .venv/bin/python bench/bench_threads.py [--duration 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

from bench_echo import run_cocaine
from bench_languages import median_round

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ["python/process", "python/thread", "cpp/process", "cpp/thread"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from cocaine.cpp import build

    rounds: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-burn-") as tmp:
        apps = {"python": os.path.join(HERE, "burn_app.py"), "cpp": os.path.join(tmp, "burn_app.so")}
        subprocess.run(["g++", "-std=c++17", "-O2", "-fPIC", "-shared", "-I", str(build.INCLUDE),
                        os.path.join(HERE, "burn_app.cpp"), "-o", apps["cpp"]], check=True)
        for _ in range(args.rounds):
            for variant in VARIANTS:
                language, backend = variant.split("/")
                rounds[variant].append(run_cocaine(args.duration, 2, 1, language, apps[language], backend,
                                                   inflight=8))
    results = {variant: median_round(runs) for variant, runs in rounds.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for variant, result in results.items():
        tp = result["throughput"]
        # The daemon's CPU per second: on the thread backend it includes the workers, so it says how
        # many cores the handlers got (the GIL caps Python near one).
        cores = tp["broker_cpu_us"] * tp["rps"] / 1e6
        print(f"{variant:15} {tp['rps']:7,.0f} req/s at 8 in flight; the daemon process used {cores:.2f} cores")


if __name__ == "__main__":
    main()
