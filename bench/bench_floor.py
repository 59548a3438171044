"""The transport's floor: what ZeroMQ over TCP costs per request when nothing else runs. A server in
C (floor_echo_server.c) answers each request at once with the reply `zeromq-server` sends, with no
broker and no worker; it is loaded by a client in C (floor_client.c) and by loadgen.py, the Python
client of every other bench here, 64 requests in flight each. Reported: requests/s, and each side's
CPU per request (user + system, every thread).

Every request any broker serves over `zeromq-server` costs at least these figures, whatever
language the broker is written in. They bound what a faster worker runtime can gain on a machine
whose cores the client, the daemon and the workers share (docs/benchmarks.md, "What bounds C++
against Python on two cores").

Usage: .venv/bin/python bench/bench_floor.py [--rounds 3] [--requests 400000] [--duration 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import time

from loadgen import cpu_seconds, measure_throughput, stop_process

HERE = os.path.dirname(os.path.abspath(__file__))


def build(folder: str) -> tuple[str, str]:
    """Compile the C server and client (needs gcc and libzmq3-dev)."""
    programs = []
    for name in ("floor_echo_server", "floor_client"):
        output = os.path.join(folder, name)
        subprocess.run(["gcc", "-O2", "-Wall", os.path.join(HERE, f"{name}.c"), "-o", output, "-lzmq"],
                       check=True)
        programs.append(output)
    return programs[0], programs[1]


def run_c_client(client: str, endpoint: str, requests: int, server_pid: int) -> dict:
    server_before = cpu_seconds(server_pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([client, endpoint, str(requests)], check=True, timeout=120)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    return {"rps": requests / seconds, "server_cpu_us": (cpu_seconds(server_pid) - server_before) / requests * 1e6,
            "client_cpu_us": client_cpu / requests * 1e6}


def run_python_client(endpoint: str, duration: float, server_pid: int) -> dict:
    server_before = cpu_seconds(server_pid)
    client_before = time.process_time()  # this process: loadgen and its ZeroMQ I/O thread
    result = measure_throughput(endpoint, inflight=64, duration=duration)
    requests = max(1, result["requests"])
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} wrong replies from the floor server")
    return {"rps": result["rps"], "server_cpu_us": (cpu_seconds(server_pid) - server_before) / requests * 1e6,
            "client_cpu_us": (time.process_time() - client_before) / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400_000, help="per round, for the C client")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per round, for loadgen.py")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rounds: dict[str, list[dict]] = {"c": [], "python": []}
    with tempfile.TemporaryDirectory(prefix="cocaine-bench-floor-") as tmp:
        server_program, client_program = build(tmp)
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        server = subprocess.Popen([server_program, endpoint])
        try:
            measure_throughput(endpoint, inflight=64, duration=0.5)  # connected and warm
            for _ in range(args.rounds):
                rounds["c"].append(run_c_client(client_program, endpoint, args.requests, server.pid))
                rounds["python"].append(run_python_client(endpoint, args.duration, server.pid))
        finally:
            stop_process(server)
    medians = {client: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
               for client, runs in rounds.items()}
    if args.json:
        print(json.dumps({"rounds": rounds, "medians": medians}, indent=2))
        return
    for client, label in (("c", "C client"), ("python", "loadgen.py")):
        median = medians[client]
        print(f"{label:11} {median['rps']:9,.0f} req/s, server CPU {median['server_cpu_us']:4.1f} us/request, "
              f"client CPU {median['client_cpu_us']:4.1f} us/request (medians of {args.rounds})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
