"""Run the baseline broker (baseline_broker.py + 2 baseline_worker.py) under loadgen and report.

Usage: python bench_baseline.py [--duration 5]
Importable: run_baseline(duration) -> {"throughput": {...}, "latency": {...}} (see loadgen).
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile

from baseline_broker import die_with_parent
from loadgen import measure_broker, measure_latency, stop_process, wait_ready

BROKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_broker.py")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_baseline(duration: float = 5.0) -> dict:
    """Start the baseline broker, measure throughput (64 in flight) and latency (1 in flight), stop it."""
    with tempfile.TemporaryDirectory(prefix="cocaine-baseline-") as tmp:
        endpoint = f"tcp://127.0.0.1:{_free_tcp_port()}"
        broker = subprocess.Popen([sys.executable, BROKER_SCRIPT, endpoint, f"ipc://{tmp}/backend"],
                                  preexec_fn=die_with_parent())
        try:
            wait_ready(endpoint, timeout=10.0, process=broker)
            return {
                "throughput": measure_broker(endpoint, broker.pid, inflight=64, duration=duration),
                "latency": measure_latency(endpoint),
            }
        finally:
            # SIGTERM lets the broker reap its workers; SIGKILL is the fallback, and the workers'
            # PDEATHSIG still takes them down with it.
            stop_process(broker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    result = run_baseline(args.duration)
    tp, lat = result["throughput"], result["latency"]
    print(f"baseline throughput (64 in flight): {tp['rps']:,.0f} req/s "
          f"({tp['requests']} in {tp['seconds']:.2f} s, {tp['errors']} errors)")
    print(f"baseline latency (1 in flight): p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, "
          f"mean {lat['mean_us']:.0f} us")


if __name__ == "__main__":
    main()
