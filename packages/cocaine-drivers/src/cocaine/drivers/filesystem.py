"""``filesystem-monitor``: every change under a path is a job whose result is published.

watchdog's observer thread hands each event to the engine's reactor thread
(``reactor.call_soon_threadsafe``); everything else happens on the reactor. Events on one path that
come close together are coalesced into one (see :func:`net_kind` and docs/drivers.md).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from cocaine.core.plugin_api import Driver, field_error, get_number, get_str, only_keys
from cocaine.drivers.common import get_bool, get_str_list

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between checks that the path exists (to start or stop watching)
# Milliseconds of quiet that end a burst of events on one path. More than the 0.5 s for which
# watchdog may hold the first half of a rename while it waits for the second half to pair them.
DEFAULT_COALESCE = 600
BURST_LIMIT = 10  # a burst on one path ends at most this many `coalesce` periods after its first event


def net_kind(first: str, last: str) -> str | None:
    """What a burst of events on one path amounts to, from its first and last kinds: a file created
    and removed within the burst is no event; removed (or renamed away) and then created again is
    ``modified`` (how editors save by rename); otherwise ``created`` wins over later
    modifications, and the last kind stands."""
    if last == "deleted":
        return None if first == "created" else "deleted"
    if first == "created":
        return "created"
    return "modified"


class FilesystemMonitor(Driver):
    """Watches ``path`` (a folder, recursively or not, or one file) and publishes each change; waits
    for the path if it does not exist (docs/drivers.md)."""

    name = "filesystem-monitor"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "path", "recursive", "patterns", "coalesce"), where)
        path = get_str(config, "path", where)
        if not os.path.isabs(path):
            raise field_error(f"{where}.path", "an absolute path", path)
        return {
            "type": cls.name,
            "path": os.path.normpath(path),
            "recursive": get_bool(config, "recursive", where, default=False),
            "patterns": get_str_list(config, "patterns", where, default=["*"]),
            "coalesce": get_number(config, "coalesce", where, default=DEFAULT_COALESCE, exclusive=False),
        }

    def start(self) -> None:
        self.path = self.config["path"]
        self.coalesce = self.config["coalesce"] / 1000.0
        self.state = "waiting"  # for the path to exist; then "watching"
        self.problem: str | None = None
        self.seen = self.events = self.coalesced = 0
        self._observer = None
        self._root = self._target = None
        self._pending: dict[str, list] = {}  # path -> [first kind, last kind, is_directory, first at, last at, count]
        self._started = False
        self._check()
        self._started = True

    # -- watching -----------------------------------------------------------------------------------
    def _check(self) -> None:
        """Start watching once the path exists; go back to waiting if the watched folder goes away."""
        if self._observer is None:
            if os.path.exists(self.path):
                self._watch()
        elif not os.path.isdir(self._root):
            self._unwatch()
            self.state = "waiting"
        self._check_timer = self.context.reactor.call_later(CHECK_INTERVAL, self._check)

    def _watch(self) -> None:
        if os.path.isdir(self.path):
            self._root, self._target, recursive = self.path, None, self.config["recursive"]
        else:  # a file: watch its folder, so that a save by rename is seen too
            self._root, self._target, recursive = os.path.dirname(self.path), self.path, False
        observer = Observer()
        try:
            observer.schedule(_Handoff(self), self._root, recursive=recursive)
            observer.start()
        except OSError as e:
            if self.problem != str(e):
                log.error("app %s: task %s: cannot watch %s: %s", self.context.app, self.context.task, self._root, e)
            self.problem = str(e)
            return
        self._observer = observer
        self.state, self.problem = "watching", None
        if self._started:  # the path appeared while the app was running
            self._note("created", self.path, os.path.isdir(self.path))

    def _unwatch(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(2.0)

    # -- events (reactor thread) --------------------------------------------------------------------
    def on_event(self, kind: str, path: str, dest: str, is_directory: bool) -> None:
        if kind == "moved":
            self._note("deleted", path, is_directory)
            self._note("created", dest, is_directory)
        elif kind in ("created", "deleted") or (kind == "modified" and not is_directory):
            self._note(kind, path, is_directory)
        # Other kinds (opened, closed) and a folder's own "modified" (its entries changed) are noise.

    def _note(self, kind: str, path: str, is_directory: bool) -> None:
        if self._observer is None or not self._wanted(path):
            return
        self.seen += 1
        if not self.coalesce:
            self._emit(kind, path, is_directory)
            return
        now = time.monotonic()
        burst = self._pending.get(path)
        if burst is None:
            self._pending[path] = [kind, kind, is_directory, now, now, 1]
            self.context.reactor.call_later(self.coalesce, self._flush, path)
        else:
            burst[1], burst[2], burst[4], burst[5] = kind, is_directory, now, burst[5] + 1

    def _wanted(self, path: str) -> bool:
        if self._target is not None:
            return path == self._target
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.config["patterns"])

    def _flush(self, path: str) -> None:
        burst = self._pending.get(path)
        if burst is None:
            return
        first, last, is_directory, first_at, last_at, count = burst
        due = min(last_at + self.coalesce, first_at + BURST_LIMIT * self.coalesce)
        if time.monotonic() < due:
            self.context.reactor.call_at(due, self._flush, path)
            return
        del self._pending[path]
        kind = net_kind(first, last)
        self.coalesced += count - (kind is not None)
        if kind is not None:
            self._emit(kind, path, is_directory)

    def _emit(self, kind: str, path: str, is_directory: bool) -> None:
        self.events += 1
        meta = {"kind": kind, "path": path, "directory": is_directory}
        self.context.submit(json.dumps(meta).encode(), self.context.publisher(meta), meta)

    def stop(self) -> None:
        timer = getattr(self, "_check_timer", None)
        if timer is not None:
            timer.cancel()
        self._unwatch()
        self._pending.clear()

    def info(self):
        return {**super().info(), "counters": {"state": self.state, "problem": self.problem, "seen": self.seen,
                                               "events": self.events, "coalesced": self.coalesced}}


class _Handoff(FileSystemEventHandler):
    """Runs on watchdog's thread: hands each event to the reactor thread, and does nothing else."""

    def __init__(self, monitor: FilesystemMonitor) -> None:
        self.monitor = monitor
        self.call = monitor.context.reactor.call_soon_threadsafe

    def on_any_event(self, event) -> None:
        self.call(self.monitor.on_event, event.event_type, _text(event.src_path), _text(event.dest_path),
                  event.is_directory)


def _text(path) -> str:
    return os.fsdecode(path) if path else ""
