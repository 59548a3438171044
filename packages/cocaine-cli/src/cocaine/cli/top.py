"""``cocaine-admin top``: the node's apps, refreshed in place until ``q`` or Ctrl-C.

Polls ``info`` over the management endpoint every ``interval`` seconds; requests/s and errors/s are
differences of the counters between two polls, and each app and task keeps a short history of its
requests/s for the sparkline. :mod:`cocaine.cli.output` draws the screen.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cocaine.cli.client import ManagementClient
from cocaine.cli.errors import CliError
from cocaine.cli.output import top_view

HISTORY = 30  # polls of requests/s each sparkline shows
QUIT_KEYS = ("q", "Q", "\x1b")


@dataclass
class Row:
    """One line of the view: an app, or one of its tasks (``task`` set)."""

    app: str
    task: str | None = None
    state: str = ""
    workers: str = ""
    queue: str = ""
    rate: float | None = None
    history: list[float] = field(default_factory=list)
    p50: float | None = None
    p99: float | None = None
    failed: int = 0
    failing: float | None = None  # failed jobs per second since the last poll
    memory: int | None = None


class Top:
    """Turns successive ``info`` replies into rows with rates and histories."""

    def __init__(self) -> None:
        self.previous: dict[tuple[str, str | None], tuple[float, int, int]] = {}
        self.histories: dict[tuple[str, str | None], deque[float]] = {}

    def rows(self, reply: dict[str, Any], now: float) -> list[Row]:
        rows = []
        for app, info in sorted((reply.get("apps") or {}).items()):
            if not isinstance(info, dict):
                continue
            if not info.get("running"):
                rows.append(Row(app, state=str(info.get("state", "?"))))
                continue
            pool, queue, jobs = info.get("pool", {}), info.get("queue", {}), info.get("jobs", {})
            row = Row(app, state=str(info.get("state", "?")),
                      workers=f"{pool.get('total', 0)}/{info.get('engine', {}).get('pool-limit', '?')}"
                              f" ({pool.get('busy', 0)} busy)",
                      queue=f"{queue.get('depth', 0)}/{queue.get('limit', '?')} (peak {queue.get('peak', 0)})",
                      memory=pool.get("memory-rss") or None, failed=jobs.get("failed", 0))
            self._rate(row, (app, None), now, jobs.get("succeeded", 0) + jobs.get("failed", 0), row.failed)
            rows.append(row)
            for task, detail in sorted((info.get("tasks") or {}).items()):
                stats = detail.get("stats", {})
                latency = stats.get("latency-ms") or {}
                task_row = Row(app, task, state=str(detail.get("type", "")), failed=stats.get("failed", 0),
                               p50=latency.get("p50"), p99=latency.get("p99"))
                self._rate(task_row, (app, task), now, stats.get("succeeded", 0) + task_row.failed, task_row.failed)
                rows.append(task_row)
        return rows

    def _rate(self, row: Row, key: tuple[str, str | None], now: float, done: int, failed: int) -> None:
        history = self.histories.setdefault(key, deque(maxlen=HISTORY))
        previous = self.previous.get(key)
        self.previous[key] = (now, done, failed)
        if previous is not None and now > previous[0] and done >= previous[1]:
            elapsed = now - previous[0]
            row.rate = (done - previous[1]) / elapsed
            row.failing = (failed - previous[2]) / elapsed
            history.append(row.rate)
        row.history = list(history)


@contextmanager
def keys() -> Iterator[Callable[[float], str]]:
    """A function that waits up to N seconds for a key and returns it ('' for none); the terminal
    is in cbreak mode meanwhile (keys arrive unbuffered, unechoed) and restored after."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    saved = termios.tcgetattr(fd) if fd is not None else None

    def wait(seconds: float) -> str:
        if fd is None:
            time.sleep(seconds)
            return ""
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 32).decode(errors="replace") if ready else ""

    try:
        if fd is not None:
            tty.setcbreak(fd)
        yield wait
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(client: ManagementClient, interval: float) -> None:
    """The live view until a quit key or Ctrl-C. Not a terminal: one view, printed, then return."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    top = Top()

    def poll():
        try:
            reply = client.request("info")
            error = reply.get("error") if isinstance(reply.get("error"), str) else None
        except CliError as e:
            reply, error = {}, str(e)
        return top_view(reply.get("node") or {}, top.rows(reply, time.monotonic()), error, client.endpoint)

    if not console.is_terminal:
        Console(width=max(console.width, 132)).print(poll())
        return
    try:
        with keys() as wait, Live(poll(), console=console, screen=True, auto_refresh=False) as live:
            while True:
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    if any(key in QUIT_KEYS for key in wait(left)):
                        return
                live.update(poll(), refresh=True)
    except KeyboardInterrupt:
        return
