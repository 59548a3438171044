"""Minimal hand-written pyzmq broker: the baseline the product is measured against.

client --tcp--> ROUTER frontend --ipc--> ROUTER backend <--> DEALER workers (baseline_worker.py)

Client framing: request [b"", body]; reply [b"", b"ok", *chunks] or [b"", b"error", code, message].
Broker<->worker: msgpack, one protocol message per frame, several frames per multipart message:
  worker->broker [1, 1, pid] hello, [5, job_id, data] chunk, [6, job_id] end
  broker->worker [4, job_id, "echo", {}, body] invoke

Usage: python baseline_broker.py FRONTEND BACKEND [--workers 2] [--credits 64]
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

from cocaine.core.transport import NOBLOCK, send_frames

HELLO, INVOKE, CHUNK, END = 1, 4, 5, 6
PR_SET_PDEATHSIG = 1
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_worker.py")


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


def serve(frontend_ep: str, backend_ep: str, n_workers: int, credits_per_worker: int) -> None:
    ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    frontend = ctx.socket(zmq.ROUTER)
    frontend.bind(frontend_ep)
    backend = ctx.socket(zmq.ROUTER)
    backend.bind(backend_ep)  # bind before spawning so workers never race the endpoint

    workers = [subprocess.Popen([sys.executable, WORKER_SCRIPT, backend_ep], preexec_fn=die_with_parent())
               for _ in range(n_workers)]
    try:
        pack = msgpack.Packer().pack
        unpackb = msgpack.unpackb
        credits = {}  # worker identity -> free credits; a worker is usable once it said hello
        pending = collections.deque()  # (client identity, body), served FIFO
        jobs = {}  # job_id -> (client identity, chunks received so far)
        job_ids = itertools.count(1)

        poller = zmq.Poller()
        poller.register(frontend, zmq.POLLIN)
        poller.register(backend, zmq.POLLIN)
        while True:
            for sock, _ in poller.poll():
                # Drain every queued message before polling again: one poll per batch, not per message,
                # is most of what makes a Python broker fast.
                if sock is frontend:
                    while True:
                        try:
                            msg = frontend.recv_multipart(NOBLOCK)
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
                            worker, *frames = backend.recv_multipart(NOBLOCK)
                        except zmq.Again:
                            break
                        for frame in frames:
                            m = unpackb(frame)
                            if m[0] == CHUNK:
                                jobs[m[1]][1].append(m[2])
                            elif m[0] == END:
                                client, chunks = jobs.pop(m[1])
                                send_frames(frontend, [client, b"", b"ok", *chunks])
                                credits[worker] += 1
                            elif m[0] == HELLO:
                                credits[worker] = credits_per_worker

            # Hand pending requests to the worker with the most free credit, collecting them per worker
            # so that each worker gets one multipart message per loop iteration.
            batches = {}
            while pending and credits:
                worker = max(credits, key=credits.get)
                if not credits[worker]:
                    break
                credits[worker] -= 1
                client, body = pending.popleft()
                job_id = next(job_ids)
                jobs[job_id] = (client, [])
                batches.setdefault(worker, []).append(pack([INVOKE, job_id, "echo", {}, body]))
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
    args = parser.parse_args()
    # Turn SIGTERM/SIGINT into a normal exit so the finally block reaps the workers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    serve(args.frontend, args.backend, args.workers, args.credits)


if __name__ == "__main__":
    main()
