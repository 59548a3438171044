"""Requests/s (64 in flight) and latency (1 in flight) of the echo task of each language's
conformance app (examples/conformance/<language>/) behind `zeromq-server`, process backend, plus
the C++ app under the thread backend (`cpp/thread`), in one run on the same machine. The engine,
driver and client are the same for all: the differences are the worker runtimes.

Machines are shared and noisy, so each language is measured ``--rounds`` times, the languages
interleaved, and the median round (by requests/s) is reported.

Usage: .venv/bin/python bench/bench_languages.py [--duration 5] [--rounds 3] [--workers 2]
                        [--concurrency 32] [--languages python,cpp,perl,js,cpp/thread] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

from bench_echo import run_cocaine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFORMANCE = os.path.join(ROOT, "examples", "conformance")
APPS = {"python": "python/app.py", "perl": "perl/app.pl", "js": "js/app.js"}


def build_cpp_app(folder: str) -> str:
    from cocaine.cpp import build

    output = os.path.join(folder, "app.so")
    subprocess.run(["g++", "-std=c++17", "-O2", "-fPIC", "-shared", "-I", str(build.INCLUDE),
                    os.path.join(CONFORMANCE, "cpp", "app.cpp"), "-o", output], check=True)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--languages", default="python,cpp,perl,js,cpp/thread",
                        help="LANGUAGE or LANGUAGE/BACKEND, comma-separated")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    languages = args.languages.split(",")
    rounds: dict[str, list[dict]] = {language: [] for language in languages}
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-cpp-") as tmp:
        cpp_app = build_cpp_app(tmp) if any(v.startswith("cpp") for v in languages) else None
        for _ in range(args.rounds):
            for variant in languages:
                language, _, backend = variant.partition("/")
                app = cpp_app if language == "cpp" else os.path.join(CONFORMANCE, APPS[language])
                rounds[variant].append(run_cocaine(args.duration, args.workers, args.concurrency, language, app,
                                                   backend or "process"))
    results = {language: median_round(runs) for language, runs in rounds.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for language, result in results.items():
        tp, lat = result["throughput"], result["latency"]
        own = tp.get("workers_cpu_us")
        workers = " (workers in it)" if own is None else f", workers {own:5.1f}"
        print(f"{language:10} {tp['rps']:9,.0f} req/s at 64 in flight ({tp['errors']} errors), "
              f"daemon CPU {tp['broker_cpu_us']:5.1f}{workers} us/request   "
              f"1 in flight: p50 {lat['p50_us']:5.0f} us, p99 {lat['p99_us']:6.0f} us")


def median_round(runs: list[dict]) -> dict:
    ranked = sorted(runs, key=lambda run: run["throughput"]["rps"])
    return ranked[len(ranked) // 2]


if __name__ == "__main__":
    main()
