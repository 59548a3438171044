"""The engine's side of :class:`cocaine.core.plugin_api.TaskContext`: what each driver is given."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from cocaine.core.engine.handle import JobHandle
from cocaine.core.engine.stats import TaskStats

if TYPE_CHECKING:
    import zmq

    from cocaine.core.engine.job import Job
    from cocaine.core.engine.pubsub import Publisher
    from cocaine.core.engine.reactor import Reactor
    from cocaine.core.plugin_api import Responder
    from cocaine.core.security import SocketSecurity


class JobIntake(Protocol):
    """Where a task's jobs go (the engine)."""

    def new_job(self, task: str, stats: TaskStats, body: bytes | None, meta: dict, responder: Responder,
                timeout: float | None = None) -> Job: ...

    def admit(self, job: Job, urgent: bool = False) -> bool: ...

    def withdraw(self, job: Job) -> None: ...


class EngineTaskContext:
    """One task's :class:`~cocaine.core.plugin_api.TaskContext`. Use only from the reactor thread."""

    def __init__(self, app: str, task: str, *, intake: JobIntake, reactor: Reactor, zmq_context: zmq.Context,
                 security: SocketSecurity, publisher: Publisher, tick_claims=None) -> None:
        self.app = app
        self.task = task
        self.stats = TaskStats()
        self._intake = intake
        self._reactor = reactor
        self._zmq_context = zmq_context
        self._security = security
        self._publisher = publisher
        self._tick_claims = tick_claims  # a cluster's (TickClaims), or None on a node alone

    @property
    def reactor(self) -> Reactor:
        return self._reactor

    @property
    def zmq_context(self) -> zmq.Context:
        return self._zmq_context

    def server_socket(self, socket_type: int, endpoint: str) -> zmq.Socket:
        return self._security.bind(self._zmq_context, socket_type, endpoint)

    def secure(self, sock: zmq.Socket, *, server: bool = True) -> zmq.Socket:
        return self._security.secure(sock, server=server)

    def submit(self, body: bytes | None, responder: Responder, meta: dict[str, Any] | None = None, *,
               timeout: float | None = None, urgent: bool = False) -> None:
        intake = self._intake
        intake.admit(intake.new_job(self.task, self.stats, body, meta or {}, responder, timeout), urgent)

    def open_job(self, responder: Responder, meta: dict[str, Any] | None = None, *, body: bytes | None = None,
                 stream: bool = False, timeout: float | None = None, urgent: bool = False,
                 on_credit: Callable[[int], None] | None = None, paced: bool = False) -> JobHandle:
        intake = self._intake
        job = intake.new_job(self.task, self.stats, body, meta or {}, responder, timeout)
        handle = JobHandle(job, intake.withdraw, stream=stream, on_credit=on_credit, paced=paced)
        intake.admit(job, urgent)
        return handle

    @property
    def clustered(self) -> bool:
        """True when this node is one of a cluster that decides which node fires a scheduled tick."""
        return self._tick_claims is not None

    def claim(self, scheduled: float, on_won: Callable[[float | None], None],
              on_lost: Callable[[], None] | None = None, *, owner: bool = False) -> None:
        """Ask whether this node fires the tick of this task scheduled at ``scheduled`` (Unix time).
        ``on_won(previous)`` runs on the reactor if it does, with the scheduled time of the last tick
        fired anywhere (None if unknown); ``on_lost()`` if another node fires it or the cluster cannot
        decide (a tick is never fired twice, so it may be fired nowhere). Outside a cluster this
        node always fires, at once. ``owner``: the schedule is not the same on every node
        (drifting-timer, manual-scheduler), so only the node that owns the task fires, and another
        takes the task over once the owner is gone."""
        claims = self._tick_claims
        if claims is None:
            on_won(None)
        else:
            claims.claim(self, scheduled, on_won, on_lost, owner=owner)

    def publisher(self, meta: dict[str, Any] | None = None) -> Responder:
        return self._publisher.responder(self.task, meta or {})
