"""The conformance app in Python: the tasks every language's app has (../README.md)."""

import os
import time

from cocaine.python import Response


def echo(request):
    return request.body


def chunks(request):
    yield b"a"
    yield b"b"
    yield b"c"


def fail(request):
    raise ValueError("bad input: " + request.text())


def crash(request):
    os._exit(7)  # the worker process dies in the middle of the job


def slow(request):
    time.sleep(int(request.body) / 1000)  # the milliseconds in the body
    return b"slept " + request.body


def hang(request):
    while True:  # a handler that never returns: the heartbeat timeout ends it
        time.sleep(1)


def tick(request):
    return f"tick {request.meta['tick']}"


def upper(request):
    return request.body.upper()


def stream(request):
    """Each chunk of a streamed request goes back as a response chunk as soon as it arrives."""
    for chunk in request:
        yield chunk


def respond(request):
    """Answers with response metadata (status 201, two headers) and what the request's HTTP metadata says."""
    meta = request.meta
    body = f"{meta['method']} {meta['path']}?{meta['query']} {meta['headers']['x-test']} {meta['peer']}"
    return Response(body, status=201, headers=[("content-type", "text/plain"), ("x-conformance", "yes")])


def flood(request):
    """Streams as many bytes as the body says (a decimal number) in chunks of 64 KiB, as fast as it
    can: faster than its client reads, so the engine's grants pace it."""
    left = int(request.text())
    chunk = b"x" * 65536
    while left > 0:
        yield chunk[:left]
        left -= len(chunk)
