"""A CPU-bound echo for bench_threads.py: burns 2 ms of this thread's CPU time, then answers."""

import time

BURN_SECONDS = 0.002


def echo(request):
    end = time.thread_time() + BURN_SECONDS
    while time.thread_time() < end:
        pass
    return request.body
