"""A lean echo worker for the baseline broker (``baseline_broker.py --worker lean``): a bare loop with
no request object, handler lookup, deadline check, message validation or heartbeats, kept to show
how much of a request's cost is the worker's (docs/benchmarks.md). The broker's default is cocaine's
own Python worker.

Usage: python baseline_worker.py BACKEND_ENDPOINT
"""
import os
import signal
import sys

import msgpack
import zmq

from cocaine.core.transport import NOBLOCK, send_frames

HELLO, INVOKE, CHUNK, END = 1, 4, 5, 6


def main() -> None:
    # The broker owns our lifetime: a Ctrl-C in the terminal reaches the whole process group, and the
    # broker tears us down with SIGTERM; if the broker dies outright, PR_SET_PDEATHSIG (set by the
    # broker before exec) kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    sock = ctx.socket(zmq.DEALER)
    sock.connect(sys.argv[1])
    pack = msgpack.Packer().pack  # a reused Packer avoids building one per message
    unpackb = msgpack.unpackb
    sock.send(pack([HELLO, 1, os.getpid()]))

    while True:
        # Block for the first message, then take everything already queued so that all of its replies
        # leave in one multipart send (one syscall/wakeup for the broker instead of one per reply).
        frames = sock.recv_multipart()
        out = []
        while True:
            for frame in frames:
                message = unpackb(frame)  # [INVOKE, job, task, meta, body, closed]
                job_id, body = message[1], message[4]
                out.append(pack([CHUNK, job_id, body]))
                out.append(pack([END, job_id]))
            try:
                frames = sock.recv_multipart(NOBLOCK)
            except zmq.Again:
                break
        send_frames(sock, out)


if __name__ == "__main__":
    main()
