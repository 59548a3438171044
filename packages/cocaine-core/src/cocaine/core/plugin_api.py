"""What a plugin author needs, from one module (docs/plugins.md). Nothing else in ``cocaine.core``
is promised to stay put: import from here.

- **Drivers** turn outside events into jobs. A driver lives on its engine's reactor thread. It
  validates its task's manifest keys in :meth:`Driver.validate`, binds or connects in
  :meth:`Driver.start`, and submits jobs through its :class:`TaskContext`, whose ``submit``
  returns at once: each job's :class:`Responder` later receives the response chunks and exactly
  one final ``end()`` or ``error()``. A job opened with ``open_job`` gives a :class:`JobHandle`.
- **Languages**, **backends** and **storages**: subclass :class:`Language` (or
  :class:`RuntimeLanguage`), :class:`Backend` and :class:`Storage`.
- Every plugin registers its classes with the hooks of :mod:`cocaine.core.hookspecs`, decorated
  with :data:`hookimpl`.

The engine implements :class:`TaskContext`, :class:`JobHandle` and :class:`Reactor`; they are
``Protocol`` classes here so that a driver depends on the contract, not on the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cocaine.core import worker_protocol
from cocaine.core.backends import Backend, WorkerHandle
from cocaine.core.errors import Code, ConfigError, ProtocolError
from cocaine.core.hookspecs import hookimpl
from cocaine.core.languages import Language, RuntimeLanguage, WorkerSpec, probe_runtime, resolve_local_path, worker_args
from cocaine.core.storage import Storage
from cocaine.core.validation import check_endpoint, field_error, get_int, get_number, get_str, only_keys

if TYPE_CHECKING:
    import zmq

__all__ = [
    # drivers
    "Driver", "TaskContext", "Responder", "JobHandle", "Reactor", "Timer", "REQUEST_WINDOW", "RESPONSE_WINDOW",
    # errors, and the manifest checks that name the field at fault
    "Code", "ConfigError", "ProtocolError",
    "check_endpoint", "field_error", "get_int", "get_number", "get_str", "only_keys",
    # languages, backends, storages
    "Language", "RuntimeLanguage", "WorkerSpec", "probe_runtime", "resolve_local_path", "worker_args",
    "Backend", "WorkerHandle", "Storage",
    # registering
    "hookimpl",
]

#: Bytes of a streamed request a driver may let its source send beyond what the handler consumed.
REQUEST_WINDOW = 256 * 1024
#: Bytes of a response a worker may send beyond what a ``paced`` job's driver has drained.
RESPONSE_WINDOW = worker_protocol.RESPONSE_WINDOW


class Responder(Protocol):
    """Where a job's response goes. The engine calls ``chunk`` zero or more times, then exactly one
    of ``end`` or ``error``. A responder that also has a ``meta(meta: dict)`` method receives the
    handler's response metadata (``{"status": int, "headers": [[name, value], ...]}``, see
    docs/protocol.md), at most once and before the first chunk; others never see it."""

    def chunk(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def error(self, code: int, message: str) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Reactor(Protocol):
    """The app's event loop, as a driver uses it. Only ``call_soon_threadsafe`` may be called from
    another thread; everything else runs on the reactor thread and must never block it."""

    def add_reader(self, source: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` while ``source`` (a ZeroMQ socket or a file descriptor) is readable; the
        callback must drain a ZeroMQ socket."""

    def remove_reader(self, source: Any) -> None: ...

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` while ``fd`` is writable; remove it once the output is flushed."""

    def remove_writer(self, fd: int) -> None: ...

    def call_later(self, delay: float, callback: Callable, *args: Any) -> Timer: ...

    def call_at(self, when: float, callback: Callable, *args: Any) -> Timer:
        """``when`` is ``time.monotonic()`` time."""

    def call_soon_threadsafe(self, callback: Callable, *args: Any) -> None: ...


class JobHandle(Protocol):
    """A job opened with :meth:`TaskContext.open_job`. Use only from the reactor thread."""

    @property
    def done(self) -> bool:
        """True once the job was answered (or refused, or cancelled): further chunks are dropped."""

    def push(self, data: bytes) -> None:
        """Add a chunk to a streamed request; dropped once the job is done or the request closed."""

    def close(self) -> None:
        """The streamed request is complete."""

    def drained(self, nbytes: int) -> None:
        """For a job opened ``paced``: ``nbytes`` more bytes of its response reached the client (or
        its socket's buffer), so the handler may produce that much more."""

    def cancel(self, code: int, message: str) -> None:
        """Give up on the job: the responder gets ``error(code, message)`` at once; a queued job
        leaves the queue, a running job's worker is told."""


class TaskContext(Protocol):
    """The engine as one task's driver sees it (``Driver.context``). Use only from the reactor thread."""

    app: str
    task: str

    @property
    def reactor(self) -> Reactor: ...

    @property
    def zmq_context(self) -> zmq.Context: ...

    def server_socket(self, socket_type: int, endpoint: str) -> zmq.Socket:
        """A socket of ``socket_type`` bound to ``endpoint`` and protected as the daemon says: its
        maximum message size and, when configured, CURVE with ZAP (docs/security.md). Every driver
        that binds a socket clients connect to makes it here. The driver closes it in ``stop()``."""

    def secure(self, sock: zmq.Socket, *, server: bool = True) -> zmq.Socket:
        """Protect a socket the driver made itself, as :meth:`server_socket` does; call before ``bind``.
        A socket the driver connects out (``server=False``) gets the message size limit only."""

    def submit(self, body: bytes | None, responder: Responder, meta: dict[str, Any] | None = None, *,
               timeout: float | None = None, urgent: bool = False) -> None:
        """Queue a job for this task. The responder always gets exactly one final answer, possibly
        at once (an error such as 503 when the queue is full).

        :param timeout: seconds from now after which the job answers 504 and is not started any more
            (default: the engine's ``request-timeout``, if any).
        :param urgent: put the job at the head of the queue.
        """

    def open_job(self, responder: Responder, meta: dict[str, Any] | None = None, *, body: bytes | None = None,
                 stream: bool = False, timeout: float | None = None, urgent: bool = False,
                 on_credit: Callable[[int], None] | None = None, paced: bool = False) -> JobHandle:
        """Queue a job like :meth:`submit` and return its :class:`JobHandle`, which can cancel it
        (a client that left, say) and stream its request.

        :param body: the request body, or its first chunk when ``stream`` is true.
        :param stream: the request goes on in chunks: ``handle.push(chunk)``, then ``handle.close()``.
        :param on_credit: called with a byte count each time the handler consumes a request chunk;
            a driver lets its source send at most :data:`REQUEST_WINDOW` bytes beyond what was credited.
        :param paced: the driver calls ``handle.drained(n)`` as its client takes the response, and
            the worker is held to :data:`RESPONSE_WINDOW` bytes beyond that (a handler that streams
            faster than its client reads is slowed down). Otherwise the response is taken as fast
            as the worker sends it.
        """

    def publisher(self, meta: dict[str, Any] | None = None) -> Responder:
        """A responder that publishes the job's result on the app's pubsub endpoint."""

    @property
    def clustered(self) -> bool:
        """True on a cluster node, where scheduled ticks are claimed cluster-wide (docs/cluster.md)."""

    def claim(self, scheduled: float, on_won: Callable[[float | None], None],
              on_lost: Callable[[], None] | None = None, *, owner: bool = False) -> None:
        """Fire the tick scheduled at ``scheduled`` only if this node claims it: ``on_won(previous)``
        on the reactor if it does (``previous``: the last tick fired anywhere, or None), else
        ``on_lost()``. A node alone always fires, at once. ``owner``: only the task's owner node
        fires (schedules that differ from node to node)."""


class Driver:
    """Base class of every driver. Subclasses set ``name`` (the task ``type`` in a manifest)."""

    #: The manifest's task ``type`` that selects this driver.
    name: ClassVar[str] = ""
    #: True when jobs have no requester and their results go to the app's pubsub endpoint.
    publishes: ClassVar[bool] = False

    def __init__(self, context: TaskContext, config: dict[str, Any]) -> None:
        self.context = context
        self.config = config

    @classmethod
    def validate(cls, config: dict[str, Any], where: str) -> dict[str, Any]:
        """Check this task's manifest keys; return the normalized config (defaults filled in).

        :param config: the task's object from the manifest, ``type`` included.
        :param where: the field path to name in errors, e.g. ``tasks.event``.
        :raises ConfigError: naming ``where.<key>`` and what was expected.
        """
        return dict(config)

    def start(self) -> None:
        """Bind, connect or schedule; called on the reactor thread. Raise to fail the app's start."""

    def stop(self) -> None:
        """Release every socket and timer; called on the reactor thread."""

    def info(self) -> dict[str, Any]:
        """What ``info`` shows for this task besides its statistics (endpoint, interval, ...)."""
        return {k: v for k, v in self.config.items() if k != "type"}
