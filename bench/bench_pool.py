"""The cost and speed of the self-managing pool:

- requests/s at 64 in flight with `concurrency` 1 (one job per worker at a time) and the default (8),
  two workers, Python echo app behind `zeromq-server`;
- spawn to ready: how long a new worker takes from its spawn until its hello (``@worker ready``
  ``startup-ms``), workers started one at a time;
- time from a burst's arrival to the pool's growth: a cold app (no worker, `pool-limit` 4,
  `concurrency` 1 and the default, or each of ``--burst-concurrency``) gets 64 requests of 50 ms
  work at once; we report the first answer, when the pool has reached its limit with every worker
  ready, when all are answered (and how many answers were errors), and when each worker was
  announced (``@worker spawned``: its pid known) and said hello (``@worker ready``), as the bench
  receives those events;
- the same for a warm burst: 32 requests of 50 ms at once on an app with one warm worker that has
  run three of them (`pool-min` 1), so that the engine knows their time and keeps the burst in its
  queue, where the pool grows for it (credit by job time, docs/pools.md);
- the memory of the burst's workers (RSS, PSS, USS from /proc/PID/smaps_rollup) and of the fork server.

The last three for workers started by exec (`"fork-server": false`) and forked by the app's fork
server (the default), interleaved in one run (``--modes fork-server`` for the fork server alone; run
this file with another tree's interpreter to measure that tree's code side by side). Usage:
.venv/bin/python bench/bench_pool.py [--duration 5] [--rounds 3] [--skip-throughput] [--modes ...]
                                     [--burst-concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import zmq

from bench_echo import _free_port, _manage, run_cocaine
from cocaine.core.manifest import EngineConfig
from loadgen import stop_process


APP = """import time

def work(request):
    time.sleep(float(request.body))
    return b'ok'

def quit(request):
    raise SystemExit(0)
"""


class Daemon:
    """A cocained in a temporary folder, with one app whose tasks are zeromq-servers."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.management = f"tcp://127.0.0.1:{_free_port()}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cocaine.core.daemon.main", "--storage-location", f"{tmp}/storage",
             "--runtime-dir", f"{tmp}/run", "--management", self.management, "--log-level", "warning"])
        self.app = os.path.join(tmp, "app.py")
        with open(self.app, "w") as f:
            f.write(APP)

    def create(self, name: str, engine: dict, tasks: list[str], pubsub: str | None = None) -> dict[str, str]:
        endpoints = {task: f"tcp://127.0.0.1:{_free_port()}" for task in tasks}
        manifest = {"type": "python", "args": self.app, "engine": engine,
                    "tasks": {task: {"type": "zeromq-server", "endpoint": e} for task, e in endpoints.items()}}
        if pubsub:
            manifest["pubsub"] = {"endpoint": pubsub}
        reply = _manage(self.management, {"version": 2, "action": "create", "apps": {name: manifest}})
        assert "error" not in reply.get(name, reply), reply
        return endpoints

    def pool(self, name: str) -> dict:
        return _manage(self.management, {"version": 2, "action": "info"})["apps"][name]["pool"]

    def wait_fork_server(self, name: str, fork_server: bool) -> None:
        """A cold app is one without workers; its fork server (if on) has imported the app."""
        deadline = time.monotonic() + 30
        while fork_server and (self.pool(name)["fork-server"] or {}).get("state") != "ready":
            assert time.monotonic() < deadline, "the fork server never became ready"
            time.sleep(0.01)

    def delete(self, name: str) -> None:
        _manage(self.management, {"version": 2, "action": "delete", "apps": [name]})

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def spawn_to_ready(daemon: Daemon, name: str, fork_server: bool, spawns: int = 30, gap: float = 0.0) -> list[float]:
    """``startup-ms`` of ``@worker ready`` (spawn until hello, as the engine sees it) for workers
    started one at a time: each one quits after one job and the next job, ``gap`` seconds later,
    starts the next (with no gap, the fork server's spare is still starting when it is needed)."""
    pubsub = f"tcp://127.0.0.1:{_free_port()}"
    endpoints = daemon.create(name, {"pool-limit": 1, "fork-server": fork_server}, ["work", "quit"], pubsub)
    daemon.wait_fork_server(name, fork_server)
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.subscribe(b"@worker ready")
    sub.connect(pubsub)
    time.sleep(0.3)  # let the subscription reach the publisher before the first worker starts
    sockets = {}
    for task, e in endpoints.items():
        sockets[task] = context.socket(zmq.REQ)
        sockets[task].rcvtimeo = 30_000
        sockets[task].connect(e)
    times = []
    for _ in range(spawns):
        sockets["work"].send(b"0")
        sockets["work"].recv_multipart()
        _, meta = sub.recv_multipart()
        times.append(json.loads(meta)["startup-ms"])
        sockets["quit"].send(b"")
        sockets["quit"].recv_multipart()  # error 500: the worker exited with status 0
        time.sleep(gap)
    for sock in (*sockets.values(), sub):
        sock.close(0)
    daemon.delete(name)
    return times


def burst_growth(daemon: Daemon, name: str, fork_server: bool, requests: int = 64, work: float = 0.05,
                 pool_limit: int = 4, concurrency: int = 1, warm: bool = False) -> dict:
    """A burst of ``requests`` jobs of ``work`` seconds at once on a cold app, or, if ``warm``, on
    an app with one warm worker that has already run a few of them (so the engine knows their time)."""
    pubsub = f"tcp://127.0.0.1:{_free_port()}"
    engine = {"pool-limit": pool_limit, "concurrency": concurrency, "queue-limit": 1000, "fork-server": fork_server}
    endpoint = daemon.create(name, {**engine, "pool-min": 1} if warm else engine, ["work"], pubsub)["work"]
    daemon.wait_fork_server(name, fork_server)
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    if warm:
        for _ in range(3):
            sock.send_multipart([b"", str(work).encode()])
            assert sock.recv_multipart()[-1] == b"ok"
    sub = context.socket(zmq.SUB)  # the timeline: when each worker was spawned and said hello
    sub.subscribe(b"@worker spawned")
    sub.subscribe(b"@worker ready")
    sub.connect(pubsub)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(sub, zmq.POLLIN)
    time.sleep(1.0)  # connected and subscribed, and the fork server's spares started, before the clock starts
    started = time.perf_counter()
    for _ in range(requests):
        sock.send_multipart([b"", str(work).encode()])
    first_answer = None
    answered = errors = 0
    timeline = {"spawned": [], "ready": []}
    deadline = started + 60
    while answered < requests and time.perf_counter() < deadline:
        if poller.poll(100):
            while sub.poll(0):
                topic = sub.recv_multipart()[0].decode().split()[1]
                timeline[topic].append((time.perf_counter() - started) * 1000)
            while sock.poll(0):
                errors += sock.recv_multipart()[-1] != b"ok"
                answered += 1
                first_answer = first_answer or time.perf_counter() - started
    # The pool is full when its last worker said hello. Read from the events, not by asking `info`
    # during the burst: each request for it costs the engine's thread the time the burst is measuring.
    all_answered = time.perf_counter() - started
    ready = timeline["ready"]
    full_pool = ready[pool_limit - 1] / 1000 if len(ready) >= pool_limit else None
    sock.close(0)
    sub.close(0)
    memory = [smaps_rollup(pid) for pid in (w["pid"] for w in daemon.pool(name)["workers"])]
    server = daemon.pool(name)["fork-server"]
    server_memory = smaps_rollup(server["pid"]) if server and server["pid"] else None
    spares = [smaps_rollup(pid) for pid in server["spares"]] if server else []
    daemon.delete(name)
    return {"requests": requests, "answered": answered, "errors": errors, "first_answer_ms": (first_answer or 0) * 1000,
            "pool_full_ms": (full_pool or float("nan")) * 1000, "all_answered_ms": all_answered * 1000,
            "ideal_ms": requests * work / pool_limit * 1000, "workers": memory, "timeline": timeline,
            "server": server_memory, "spares": spares}


def smaps_rollup(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages split among their sharers) and USS (pages only this process has), MiB."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="cold bursts per mode, interleaved")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--modes", nargs="+", choices=("exec", "fork-server"), default=("exec", "fork-server"))
    parser.add_argument("--burst-concurrency", type=int, nargs="+", default=(1, EngineConfig().concurrency),
                        metavar="N", help="the cold burst's engine.concurrency, a burst for each value "
                                          "(default: 1, and the engine's default)")
    args = parser.parse_args()
    if not args.skip_throughput:
        default = EngineConfig().concurrency
        for concurrency in (1, default):
            result = run_cocaine(args.duration, 2, concurrency)["throughput"]
            print(f"concurrency {concurrency:2}: {result['rps']:9,.0f} req/s at 64 in flight, "
                  f"broker CPU {result['broker_cpu_us']:.1f} us/request")
    modes = {mode: fork_server for mode, fork_server in {"exec": False, "fork-server": True}.items()
             if mode in args.modes}
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-") as tmp:
        daemon = Daemon(tmp)
        try:
            spawns = {(mode, gap): [] for mode in modes for gap in (0.0, 0.5)}
            bursts = {(mode, concurrency): [] for mode in modes for concurrency in args.burst_concurrency}
            warm_bursts = {(mode, concurrency): [] for mode in modes for concurrency in args.burst_concurrency}
            for round_ in range(args.rounds):  # interleaved: the machine's drift hits both modes alike
                for mode, fork_server in modes.items():
                    for gap in (0.0, 0.5):
                        spawns[mode, gap] += spawn_to_ready(daemon, f"spawn-{mode}-{gap}-{round_}", fork_server,
                                                            spawns=10, gap=gap)
                    for concurrency in args.burst_concurrency:
                        bursts[mode, concurrency].append(burst_growth(
                            daemon, f"burst-{mode}-{concurrency}-{round_}", fork_server, concurrency=concurrency))
                        warm_bursts[mode, concurrency].append(burst_growth(
                            daemon, f"warm-{mode}-{concurrency}-{round_}", fork_server, requests=32,
                            concurrency=concurrency, warm=True))
        finally:
            daemon.stop()
    print("\nspawn to ready (@worker ready startup-ms), workers started one at a time:")
    for (mode, gap), times in spawns.items():
        q = statistics.quantiles(times, n=10)
        spacing = "back to back" if not gap else f"{gap:g} s apart"
        print(f"  {mode:12} {spacing:12} p50 {statistics.median(times):6.1f} ms"
              f"   p10 {q[0]:6.1f}   p90 {q[-1]:6.1f}  ({len(times)} spawns)")
    print(f"\ncold burst of 64 x 50 ms jobs, pool-limit 4 (ideal with 4 warm workers: 800 ms), "
          f"median of {args.rounds}:")
    for (mode, concurrency), rounds in bursts.items():
        first, full, everything = (statistics.median(r[key] for r in rounds)
                                   for key in ("first_answer_ms", "pool_full_ms", "all_answered_ms"))
        print(f"  {mode:12} concurrency {concurrency}:")
        print(f"  {'':12} first answer {first:6.0f} ms   pool full {full:6.0f} ms"
              f"   all answered {everything:6.0f} ms ({everything / 800:.2f}x ideal)"
              f"   errors {sum(r['errors'] for r in rounds)}")
        for event in ("spawned", "ready"):  # the n-th worker's, median over the rounds
            times = [statistics.median(r["timeline"][event][n] for r in rounds if len(r["timeline"][event]) > n)
                     for n in range(max(len(r["timeline"][event]) for r in rounds))]
            print(f"  {'':12} workers {event:8} at " + " ".join(f"{t:5.1f}" for t in times) + " ms")
    print(f"\nwarm burst of 32 x 50 ms jobs on one warm worker that ran 3 of them, pool-limit 4 (ideal with 4 "
          f"warm workers: 400 ms; on the warm worker alone: 1,600 ms), median of {args.rounds}:")
    for (mode, concurrency), rounds in warm_bursts.items():
        everything = statistics.median(r["all_answered_ms"] for r in rounds)
        started = statistics.median(len(r["timeline"]["ready"]) for r in rounds)
        print(f"  {mode:12} concurrency {concurrency:2}: all answered {everything:6.0f} ms, "
              f"{started:g} workers started for it, errors {sum(r['errors'] for r in rounds)}")
    print("\nmemory after the burst (MiB; workers: mean of the 4 workers of the last round):")
    for mode in modes:
        rounds = bursts[mode, args.burst_concurrency[0]]
        workers, server, spares = rounds[-1]["workers"], rounds[-1]["server"], rounds[-1]["spares"]
        print(f"  {mode:12} worker  RSS {_mean(workers, 'rss'):5.1f}   PSS {_mean(workers, 'pss'):5.1f}   "
              f"USS {_mean(workers, 'uss'):5.1f}")
        for label, process in [("server", server), *(("spare", spare) for spare in spares)]:
            if process:
                print(f"  {'':12} {label:7} RSS {process['rss']:5.1f}   PSS {process['pss']:5.1f}   "
                      f"USS {process['uss']:5.1f}")
        total = sum(p["pss"] for p in (*workers, *spares, *([server] if server else [])))
        print(f"  {'':12} the app's processes together (sum of PSS): {total:.1f}")


if __name__ == "__main__":
    main()
