"""Minimal hand-written pyzmq broker: the baseline the product is measured against.

client --tcp--> ROUTER frontend --ipc--> ROUTER backend <--> DEALER workers

The workers are cocaine's own Python workers (``python -m cocaine.python.worker`` serving
``echo_app.py``), the same code the daemon runs, so that the comparison is between brokers only.
``--worker lean`` starts ``baseline_worker.py`` instead, a 20-line loop leaner than the real worker,
kept for context (docs/benchmarks.md).

Client framing: request [b"", body]; reply [b"", b"ok", *chunks] or [b"", b"error", code, message].
Broker<->worker: the worker protocol (docs/protocol.md), of which this broker speaks only what an
echo needs: it sends invoke [4, job, "echo", {}, body, true] and answers a heartbeat [2] with one
(a worker gives up after three silent intervals when idle); it reads hello [1, 1, pid] (the worker
gets credit), chunk [5, job, data] and end [6, job]; it ignores the rest (log lines). It offers no
handback (no options message), which the worker then does not do.

Usage: python baseline_broker.py FRONTEND BACKEND [--workers 2] [--credits 64] [--worker cocaine|lean]
"""
import argparse
import collections
import ctypes
import itertools
import os
import signal
import subprocess
import sys

import msgpack
import zmq

from cocaine.core.transport import recv_frames, send_frames

HELLO, HEARTBEAT, INVOKE, CHUNK, END = 1, 2, 4, 5, 6
PR_SET_PDEATHSIG = 1
HERE = os.path.dirname(os.path.abspath(__file__))
ECHO_APP = os.path.join(HERE, "echo_app.py")
LEAN_WORKER = os.path.join(HERE, "baseline_worker.py")
HEARTBEAT_INTERVAL = 5.0  # what cocained passes by default (heartbeat-timeout 30 s / 3, at most 5)


def die_with_parent():
    """Return a Popen preexec_fn that makes the child get SIGKILL when this process dies (Linux).

    This is what guarantees no orphans even if the parent is SIGKILLed and cannot clean up.
    """
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def worker_command(kind: str, backend_ep: str, number: int) -> list[str]:
    if kind == "lean":
        return [sys.executable, LEAN_WORKER, backend_ep]
    return [sys.executable, "-m", "cocaine.python.worker", "--endpoint", backend_ep, "--id", f"baseline-{number}",
            "--app", "echo", "--path", ECHO_APP, "--heartbeat", f"{HEARTBEAT_INTERVAL:g}"]


def serve(frontend_ep: str, backend_ep: str, n_workers: int, credits_per_worker: int, kind: str) -> None:
    ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    frontend = ctx.socket(zmq.ROUTER)
    frontend.bind(frontend_ep)
    backend = ctx.socket(zmq.ROUTER)
    backend.bind(backend_ep)  # bind before spawning so workers never race the endpoint

    env = {**os.environ, "COCAINE_PARENT_PID": str(os.getpid())}
    workers = [subprocess.Popen(worker_command(kind, backend_ep, n), env=env, preexec_fn=die_with_parent())
               for n in range(1, n_workers + 1)]
    try:
        pack = msgpack.Packer().pack
        unpackb = msgpack.unpackb
        heartbeat = pack([HEARTBEAT])
        credits = {}  # worker identity -> free credits; a worker is usable once it said hello
        pending = collections.deque()  # (client identity, body), served FIFO
        jobs = {}  # job_id -> (client identity, chunks received so far)
        job_ids = itertools.count(1)

        poller = zmq.Poller()
        poller.register(frontend, zmq.POLLIN)
        poller.register(backend, zmq.POLLIN)
        while True:
            batches = {}  # worker identity -> frames to send it this iteration
            for sock, _ in poller.poll():
                # Drain every queued message before polling again: one poll per batch, not per message,
                # is most of what makes a Python broker fast.
                if sock is frontend:
                    while True:
                        try:
                            msg = recv_frames(frontend)
                        except zmq.Again:
                            break
                        if len(msg) == 3 and msg[1] == b"":
                            pending.append((msg[0], msg[2]))
                        else:
                            send_frames(frontend, [msg[0], b"", b"error", b"400",
                                                  b"expected [empty delimiter, body]"])
                else:
                    while True:
                        try:
                            worker, *frames = recv_frames(backend)
                        except zmq.Again:
                            break
                        for frame in frames:
                            m = unpackb(frame)
                            kind = m[0]
                            if kind == CHUNK:
                                jobs[m[1]][1].append(m[2])
                            elif kind == END:
                                client, chunks = jobs.pop(m[1])
                                send_frames(frontend, [client, b"", b"ok", *chunks])
                                credits[worker] += 1
                            elif kind == HEARTBEAT:
                                batches.setdefault(worker, []).append(heartbeat)
                            elif kind == HELLO:
                                credits[worker] = credits_per_worker

            # Hand pending requests to the worker with the most free credit, collecting them per worker
            # so that each worker gets one multipart message per loop iteration.
            while pending and credits:
                worker = max(credits, key=credits.get)
                if not credits[worker]:
                    break
                credits[worker] -= 1
                client, body = pending.popleft()
                job_id = next(job_ids)
                jobs[job_id] = (client, [])
                batches.setdefault(worker, []).append(pack([INVOKE, job_id, "echo", {}, body, True]))
            for worker, frames in batches.items():
                send_frames(backend, [worker, *frames])
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=2)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frontend", help="client endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("backend", help="worker endpoint, e.g. ipc:///tmp/baseline.ipc")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--credits", type=int, default=64, help="requests in flight per worker")
    parser.add_argument("--worker", choices=("cocaine", "lean"), default="cocaine",
                        help="cocaine's Python worker (the default), or the lean loop of baseline_worker.py")
    args = parser.parse_args()
    # Turn SIGTERM/SIGINT into a normal exit so the finally block reaps the workers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    serve(args.frontend, args.backend, args.workers, args.credits, args.worker)


if __name__ == "__main__":
    main()
