"""An example app: every task of examples/echo/manifest.json is a function here."""

import time


def echo(request):
    """zeromq-server: answer with the request body."""
    return request.body


def count(request):
    """zeromq-server: stream the numbers 1..N (N from the body, default 3), one chunk each."""
    n = int(request.body or b"3")
    for i in range(1, n + 1):
        yield f"{i}\n"


def tick(request):
    """recurring-timer: published on the app's pubsub endpoint."""
    return f"tick {request.meta['tick']} at {time.strftime('%H:%M:%S')}"
