"""Load client shared by the baseline and product benchmarks.

Speaks the client framing: request [b"", body], reply [b"", b"ok", *chunks]; an echo must return
exactly [b"", b"ok", body]. Every receive is bounded by a timeout so a dead server fails the run
instead of hanging it.

CLI: python loadgen.py ENDPOINT [--duration 5] [--inflight 64] [--latency-requests 2000]
"""
import argparse
import statistics
import time

import zmq

from cocaine.core.transport import NOBLOCK, send_frames

TIMEOUT_S = 5.0


def _connect(ctx: zmq.Context, endpoint: str, timeout: float = TIMEOUT_S) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    sock.connect(endpoint)
    return sock


def _recv(sock: zmq.Socket, endpoint: str) -> list:
    try:
        return sock.recv_multipart()
    except zmq.Again:
        timeout = sock.getsockopt(zmq.RCVTIMEO) / 1000
        raise TimeoutError(f"server at {endpoint} did not answer within {timeout:g} s") from None


def wait_ready(endpoint: str, timeout: float = 10.0, process=None) -> None:
    """Block until the server at `endpoint` answers an echo probe, or raise TimeoutError.

    `process` (a Popen) is checked while waiting so that a server that crashed on start-up is
    reported at once rather than after the whole timeout.
    """
    ctx = zmq.Context.instance()
    deadline = time.monotonic() + timeout
    # One probe is enough: a DEALER queues it until the connection exists, and the server queues
    # it until a worker is up; short polls only exist to notice a dead process early.
    with _connect(ctx, endpoint) as sock:
        sock.send_multipart([b"", b"probe"])
        while not sock.poll(100):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with status {process.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server at {endpoint} not ready after {timeout:g} s")
        reply = sock.recv_multipart()
        if reply[:2] != [b"", b"ok"]:
            raise RuntimeError(f"unexpected probe reply from {endpoint}: {reply!r}")


def stop_process(proc, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far, from /proc."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_broker(endpoint: str, pid: int, inflight: int = 64, duration: float = 5.0) -> dict:
    """Throughput, plus the CPU the broker process ``pid`` spent per request: steadier than
    requests/s on a shared machine, since it does not count time the broker was not running."""
    before = cpu_seconds(pid)
    result = measure_throughput(endpoint, inflight=inflight, duration=duration)
    result["broker_cpu_us"] = (cpu_seconds(pid) - before) / max(1, result["requests"]) * 1e6
    return result


def measure_throughput(endpoint: str, inflight: int = 64, duration: float = 5.0,
                       payload: bytes = b"x" * 16) -> dict:
    """Keep `inflight` echo requests outstanding on one DEALER for `duration` seconds.

    Returns requests (correct echoes), seconds (until the last reply), rps (requests/seconds) and
    errors (replies that were not [b"", b"ok", payload]).
    """
    ctx = zmq.Context.instance()
    request = [b"", payload]
    expected = [b"", b"ok", payload]
    good = errors = 0
    with _connect(ctx, endpoint) as sock:
        start = time.perf_counter()
        deadline = start + duration
        for _ in range(inflight):
            send_frames(sock, request)
        outstanding = inflight
        while outstanding:
            # One blocking receive, then whatever else has arrived: the client must cost as little
            # CPU as possible because it shares the two cores with the server under test.
            replies = [_recv(sock, endpoint)]
            while True:
                try:
                    replies.append(sock.recv_multipart(NOBLOCK))
                except zmq.Again:
                    break
            for reply in replies:
                if reply == expected:
                    good += 1
                else:
                    errors += 1
            outstanding -= len(replies)
            if time.perf_counter() < deadline:
                for _ in replies:
                    send_frames(sock, request)
                outstanding += len(replies)
        seconds = time.perf_counter() - start
    return {"requests": good, "seconds": seconds, "rps": good / seconds, "errors": errors}


def measure_latency(endpoint: str, requests: int = 2000, warmup: int = 200,
                    payload: bytes = b"x" * 16) -> dict:
    """Round-trip time of echo requests sent one at a time; p50/p99/mean in microseconds."""
    ctx = zmq.Context.instance()
    request = [b"", payload]
    expected = [b"", b"ok", payload]
    samples = []
    with _connect(ctx, endpoint) as sock:
        for i in range(warmup + requests):
            t0 = time.perf_counter()
            send_frames(sock, request)
            reply = _recv(sock, endpoint)
            t1 = time.perf_counter()
            if reply != expected:
                raise RuntimeError(f"bad echo reply from {endpoint}: {reply!r}")
            if i >= warmup:
                samples.append((t1 - t0) * 1e6)
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean_us": statistics.fmean(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--latency-requests", type=int, default=2000)
    args = parser.parse_args()
    wait_ready(args.endpoint)
    tp = measure_throughput(args.endpoint, inflight=args.inflight, duration=args.duration)
    print(f"throughput ({args.inflight} in flight): {tp['rps']:,.0f} req/s "
          f"({tp['requests']} in {tp['seconds']:.2f} s, {tp['errors']} errors)")
    lat = measure_latency(args.endpoint, requests=args.latency_requests)
    print(f"latency (1 in flight): p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, "
          f"mean {lat['mean_us']:.0f} us")


if __name__ == "__main__":
    main()
