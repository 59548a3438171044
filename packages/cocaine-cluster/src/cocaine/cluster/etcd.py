"""The etcd client thread: one asyncio loop of its own, so no busy engine reactor can delay a lease.

Everything that talks to etcd (storage writes, the watch, the node's lease, timer claims) runs as a
coroutine on this loop; other threads call :meth:`EtcdThread.call` and wait with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit

import aetcd

log = logging.getLogger(__name__)
# gRPC's asyncio layer logs every loop lookup at DEBUG; the daemon's --log-level debug should stay readable.
logging.getLogger("grpc._cython.cygrpc").setLevel(logging.INFO)

DEFAULT_PORT = 2379
CALL_TIMEOUT = 3.0  # seconds a management write waits for etcd before answering "unavailable"


class Unavailable(Exception):
    """etcd could not be reached (or did not answer in time); the message says why."""


def parse_url(url: str) -> list[tuple[str, int]]:
    """``etcd://HOST:PORT[,HOST:PORT...]`` as (host, port) pairs. :raises ValueError: naming the part at fault."""
    if not url.startswith("etcd://"):
        raise ValueError(f"expected etcd://HOST:PORT[,HOST:PORT...], got {url!r}")
    endpoints = []
    for part in url[len("etcd://"):].rstrip("/").split(","):
        split = urlsplit(f"//{part}")
        try:
            port = split.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"{url}: bad port in {part!r}") from None
        if not split.hostname:
            raise ValueError(f"{url}: no host in {part!r}")
        endpoints.append((split.hostname, port))
    return endpoints


class EtcdThread:
    """An aetcd client on its own thread and loop. On a connection failure the next call goes to the
    next endpoint of the list (etcd members each answer for the whole cluster)."""

    def __init__(self, endpoints: list[tuple[str, int]], *, timeout: float = CALL_TIMEOUT) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._current = 0
        self.loop = asyncio.new_event_loop()
        self.client: aetcd.Client | None = None
        self.thread = threading.Thread(target=self._run, name="cluster-etcd", daemon=True)
        self._ready = threading.Event()
        self._closing: set[asyncio.Future] = set()

    def start(self) -> None:
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._ready.set()
        self.loop.run_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._current]
        return f"{host}:{port}"

    async def connected(self) -> aetcd.Client:
        """The client, (re)connected; on the loop."""
        if self.client is None:
            host, port = self.endpoints[self._current]
            # A short gRPC timeout: a stopped etcd must turn into an error, not a hung request.
            self.client = aetcd.Client(host=host, port=port, timeout=self.timeout)
            await self.client.connect()
        return self.client

    async def reset(self) -> None:
        """Drop the connection after a failure; the next use goes to the next endpoint."""
        client, self.client = self.client, None
        self._current = (self._current + 1) % len(self.endpoints)
        if client is not None:
            # Closed in the background, never awaited: aetcd's watcher swallows the cancellation of
            # its stream, so waiting for a close over a cut connection (even with a timeout) can hang.
            closing = asyncio.ensure_future(client.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closed)

    def _closed(self, closing: asyncio.Future) -> None:
        self._closing.discard(closing)
        if not closing.cancelled() and closing.exception() is not None:
            log.debug("closing a broken etcd connection: %s", describe(closing.exception()))

    async def run(self, operation: Callable[[aetcd.Client], Awaitable[Any]]) -> Any:
        """``operation(client)`` on the loop; a connection failure becomes :class:`Unavailable`."""
        try:
            client = await self.connected()
            return await asyncio.wait_for(operation(client), self.timeout)
        except (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
                aetcd.exceptions.InternalError, TimeoutError) as e:
            await self.reset()
            raise Unavailable(f"etcd at {self.endpoint} did not answer: {describe(e)}") from None
        except asyncio.CancelledError:
            if cancelled():
                raise
            # gRPC cancels the calls of a channel that another failure closed: this call failed too.
            raise Unavailable(f"etcd at {self.endpoint}: the connection was reset") from None

    def call(self, operation: Callable[[aetcd.Client], Awaitable[Any]], timeout: float | None = None) -> Any:
        """Run ``operation`` from another thread and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(self.run(operation), self.loop)
        try:
            return future.result((timeout or self.timeout) + 1.0)
        except FutureTimeout:
            future.cancel()
            raise Unavailable(f"etcd at {self.endpoint} did not answer in {timeout or self.timeout} s") from None

    def spawn(self, coroutine: Awaitable[Any]) -> asyncio.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        async def close() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            if self.client is not None:
                try:
                    await asyncio.wait_for(self.client.close(), 1.0)
                except Exception:  # noqa: BLE001 - shutting down either way
                    pass

        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(3.0)
            except Exception:  # noqa: BLE001
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(3.0)


def cancelled() -> bool:
    """Whether the running task itself is being cancelled: gRPC also raises CancelledError in a call
    whose channel was closed, which is a failure to retry, not a reason to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
