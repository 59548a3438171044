"""Run the baseline broker (baseline_broker.py with 2 of cocaine's Python workers, or of the lean
baseline_worker.py with ``--worker lean``) under loadgen and report.

Usage: python bench_baseline.py [--duration 5] [--worker cocaine|lean]
Importable: run_baseline(duration, worker) -> {"throughput": {...}, "latency": {...}} (see loadgen);
the workers' own CPU per request is in throughput["workers_cpu_us"].
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile

from baseline_broker import die_with_parent
from loadgen import cpu_seconds, measure_broker, measure_latency, measure_throughput, stop_process, wait_ready

BROKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_broker.py")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_baseline(duration: float = 5.0, worker: str = "cocaine") -> dict:
    """Start the baseline broker, measure throughput (64 in flight) and latency (1 in flight), stop it."""
    with tempfile.TemporaryDirectory(prefix="cocaine-baseline-") as tmp:
        endpoint = f"tcp://127.0.0.1:{_free_tcp_port()}"
        broker = subprocess.Popen([sys.executable, BROKER_SCRIPT, endpoint, f"ipc://{tmp}/backend",
                                   "--worker", worker], preexec_fn=die_with_parent())
        try:
            wait_ready(endpoint, timeout=10.0, process=broker)
            # Warm up as run_cocaine does: both workers ready (the probe needed only one).
            measure_throughput(endpoint, inflight=64, duration=1.0)
            pids = children(broker.pid)
            before = sum(cpu_seconds(pid) for pid in pids)
            throughput = measure_broker(endpoint, broker.pid, inflight=64, duration=duration)
            throughput["workers_cpu_us"] = (sum(cpu_seconds(pid) for pid in pids) - before) / max(
                1, throughput["requests"]) * 1e6
            return {"throughput": throughput, "latency": measure_latency(endpoint)}
        finally:
            # SIGTERM lets the broker reap its workers; SIGKILL is the fallback, and the workers'
            # PDEATHSIG still takes them down with it.
            stop_process(broker)


def children(pid: int) -> list[int]:
    """The pids of a process's children (the broker starts its workers before it serves)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--worker", choices=("cocaine", "lean"), default="cocaine")
    args = parser.parse_args()
    result = run_baseline(args.duration, args.worker)
    tp, lat = result["throughput"], result["latency"]
    print(f"baseline throughput (64 in flight): {tp['rps']:,.0f} req/s "
          f"({tp['requests']} in {tp['seconds']:.2f} s, {tp['errors']} errors)")
    print(f"baseline latency (1 in flight): p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, "
          f"mean {lat['mean_us']:.0f} us")


if __name__ == "__main__":
    main()
