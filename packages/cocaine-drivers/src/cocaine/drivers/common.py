"""Helpers the drivers share: validating flags and lists, and noticing when a job ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cocaine.core.plugin_api import Driver, field_error, Responder


def get_bool(config: dict, key: str, where: str, *, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise field_error(f"{where}.{key}", "true or false", value)
    return value


def get_str_list(config: dict, key: str, where: str, *, default: list[str] | None = None,
                 empty_ok: bool = False) -> list[str]:
    """A string or a non-empty list of strings (empty strings only if ``empty_ok``), as a list;
    required when there is no ``default``."""
    value = config.get(key, default)
    expected = "a string or a non-empty list of strings"
    if value is None:
        if key not in config:
            raise field_error(f"{where}.{key}", expected)
        raise field_error(f"{where}.{key}", expected, None)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise field_error(f"{where}.{key}", expected, value)
    for i, item in enumerate(items):
        if not isinstance(item, str) or (not item and not empty_ok):
            raise field_error(f"{where}.{key}[{i}]" if items is value else f"{where}.{key}",
                              "a non-empty string" if not empty_ok else "a string", item)
    return list(items)


class Finished:
    """A responder that passes everything on, then calls ``on_done(code)`` (None for success)."""

    __slots__ = ("inner", "on_done")

    def __init__(self, inner: Responder, on_done: Callable[[int | None], None]) -> None:
        self.inner = inner
        self.on_done = on_done

    def chunk(self, data: bytes) -> None:
        self.inner.chunk(data)

    def end(self) -> None:
        try:
            self.inner.end()
        finally:
            self.on_done(None)

    def error(self, code: int, message: str) -> None:
        try:
            self.inner.error(code, message)
        finally:
            self.on_done(code)


OVERLAP_POLICIES = ("allow", "skip")


class Overlap:
    """What a scheduled task does when a tick comes while its previous job still runs: ``allow``
    queues a job anyway (jobs may overlap), ``skip`` drops the tick (counted in ``skipped``)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.running = 0
        self.skipped = 0

    def submit(self, context, meta: dict[str, Any]) -> bool:
        """Submit one job whose result is published, unless the policy skips it. True if submitted."""
        if self.policy == "skip" and self.running:
            self.skipped += 1
            return False
        self.running += 1
        context.submit(None, Finished(context.publisher(meta), self._done), meta)
        return True

    def _done(self, code: int | None) -> None:
        self.running -= 1


class SocketDriver(Driver):
    """A driver that reads one ZeroMQ socket, ``self.sock``, on the reactor; ``stop`` closes it."""

    sock = None

    def stop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self.context.reactor.remove_reader(sock)
            sock.close(0)
