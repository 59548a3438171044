"""One worker alone, over a ZeroMQ link and over a stream link (docs/protocol.md, "Transport"): its own
CPU per request, its resident memory and threads once it said hello, and how long after its start
the hello came. No daemon: tests/runtimes.py's ScriptedEngine plays the engine, sending batches of
``echo`` invokes to the conformance app of each language (examples/conformance/) and reading every
reply. The links alternate round by round; each figure is the median of the rounds.

Usage: .venv/bin/python bench/bench_worker_link.py [--languages js,python] [--rounds 3]
                                                    [--requests 32000] [--batch 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from runtimes import APP_FILES, CONFORMANCE, language_class, ScriptedEngine  # noqa: E402

from cocaine.core import worker_protocol  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP_BATCHES = 200


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def status(pid: int, key: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(key))
    return int(line.split()[1])


def measure(context: zmq.Context, language: str, link: str, requests: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-link-") as tmp:
        engine = ScriptedEngine(context, Path(tmp))
        try:
            started = time.perf_counter()
            engine.start_worker(language, str(CONFORMANCE / language / APP_FILES[language]), link=link)
            engine.hello()
            hello_ms = (time.perf_counter() - started) * 1000
            pid = engine.proc.pid
            rss_kib, threads = status(pid, "VmRSS:"), status(pid, "Threads:")
            job = 1

            def run(batches: int) -> None:
                nonlocal job
                for _ in range(batches):
                    engine.send(*(worker_protocol.invoke(job + k, "echo", {}, b"hello", True) for k in range(batch)))
                    job += batch
                    engine.frames(2 * batch)  # a chunk and an end each

            run(WARM_UP_BATCHES)
            before = cpu_seconds(pid)
            batches = max(1, requests // batch)
            run(batches)
            cpu_us = (cpu_seconds(pid) - before) / (batches * batch) * 1e6
        finally:
            engine.close()
    return {"worker_cpu_us": cpu_us, "rss_mib": rss_kib / 1024, "threads": threads, "hello_ms": hello_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", default="js,python", help="comma-separated; each needs stream_link")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=32000, help="measured per round, after a warm-up")
    parser.add_argument("--batch", type=int, default=32, help="invokes sent together")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    languages = args.languages.split(",")
    for language in languages:
        cls = language_class(language)
        if not cls.stream_link:
            parser.error(f"{language}: its language has no stream links")
        if hasattr(cls, "check_runtime"):
            cls.check_runtime()  # once, here: its result is remembered, and not counted in a start
    context = zmq.Context()
    rounds = {(language, link): [] for language in languages for link in ("zeromq", "stream")}
    for _ in range(args.rounds):
        for language, link in rounds:
            rounds[language, link].append(measure(context, language, link, args.requests, args.batch))
    results = {language: {link: {key: statistics.median(run[key] for run in rounds[language, link])
                                 for key in rounds[language, link][0]}
                          for link in ("zeromq", "stream")}
               for language in languages}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for language, links in results.items():
        for link, r in links.items():
            print(f"{language:8} {link:7} worker CPU {r['worker_cpu_us']:5.1f} us/request   "
                  f"RSS {r['rss_mib']:5.1f} MiB, {r['threads']:.0f} threads   "
                  f"hello {r['hello_ms']:4.0f} ms after start")
        ratio = links["stream"]["worker_cpu_us"] / links["zeromq"]["worker_cpu_us"]
        print(f"{language:8} stream/zeromq worker CPU {ratio:.2f}x")


if __name__ == "__main__":
    main()
