"""The daemon's log: one record per line, attributed to an app and a worker, as text or JSON.

Text (the default), greppable by field::

    2026-11-28T10:00:00.123Z INFO    app=echo worker=echo.4242.1.1 started (pid 4250)
    2026-11-28T10:00:01.456Z ERROR   app=echo worker=echo.4242.1.1 task 'fails' job 3 failed: ValueError: bad
    2026-11-28T10:00:01.456Z ERROR   app=echo worker=echo.4242.1.1 | Traceback (most recent call last):

A message of several lines (a traceback) is one record: its further lines repeat the head and start
with ``| ``, so that grepping for an app finds all of them. JSON (``--log-format json``): one object
per line with ``timestamp``, ``level``, ``app``, ``worker``, ``logger``, ``message`` (and ``stream``
for a worker's output).

Where a record's app and worker come from, first match wins: ``extra={"app": ..., "worker": ...}``;
the project's message convention ``"app NAME: [worker ID[:] ]..."`` (the prefix moves into the
fields); the thread that logged it (an engine's reactor thread ``engine-APP``).

Thread-backend workers run in the daemon: a runtime that forwards its thread's records to its engine
(as protocol ``log`` messages) claims the thread with :func:`claim_thread`, so that the daemon's own
handler does not print them a second time.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time

FORMATS = ("text", "json")

_PREFIX = re.compile(r"app (?P<app>[^\s:]+): (?:worker (?P<worker>[^\s:]+):? )?")
_claimed: set[int] = set()
_claimed_lock = threading.Lock()


def claim_thread() -> None:
    """Records logged by the calling thread reach the log some other way (see the module's doc)."""
    with _claimed_lock:
        _claimed.add(threading.get_ident())


def release_thread() -> None:
    with _claimed_lock:
        _claimed.discard(threading.get_ident())


def attribution(record: logging.LogRecord) -> tuple[str | None, str | None, str]:
    """``(app, worker, message)`` of a record, with an ``app NAME:`` prefix moved out of the message."""
    app = getattr(record, "app", None)
    worker = getattr(record, "worker", None)
    message = record.getMessage()
    if app is None:
        match = _PREFIX.match(message)
        if match:
            app, worker, message = match["app"], worker or match["worker"], message[match.end():]
        elif record.threadName.startswith("engine-"):
            app = record.threadName[len("engine-"):]
    return app, worker, message


def timestamp(created: float) -> str:
    seconds = int(created)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{int((created - seconds) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        app, worker, message = attribution(record)
        head = f"{timestamp(record.created)} {record.levelname:<7} "
        if app:
            head += f"app={app} "
        if worker:
            head += f"worker={worker} "
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        first, *rest = message.rstrip("\n").split("\n")
        return "\n".join([head + first, *(f"{head}| {line}" for line in rest)])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        app, worker, message = attribution(record)
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry = {"timestamp": timestamp(record.created), "level": record.levelname.lower(), "app": app,
                 "worker": worker, "logger": record.name, "message": message}
        stream = getattr(record, "stream", None)
        if stream:
            entry["stream"] = stream
        return json.dumps(entry, ensure_ascii=False)


def _unclaimed(record: logging.LogRecord) -> bool:
    return record.thread not in _claimed


def configure(level: str = "info", fmt: str = "text", stream=None) -> logging.Handler:
    """The daemon's logging: one handler on the root logger, writing to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_unclaimed)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
