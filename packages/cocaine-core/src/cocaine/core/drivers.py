"""The driver interface: an event source that turns outside events into jobs for the engine.

A driver lives on its engine's reactor thread. It validates its task's manifest keys in
:meth:`Driver.validate`, binds or connects in :meth:`Driver.start`, and submits jobs through its
:class:`~cocaine.core.engine.context.TaskContext`, whose ``submit`` returns at once: each job's
responder later receives the response chunks and exactly one final ``end()`` or ``error()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from cocaine.core.engine.context import TaskContext


class Responder(Protocol):
    """Where a job's response goes. The engine calls ``chunk`` zero or more times, then exactly one
    of ``end`` or ``error``. A responder that also has a ``meta(meta: dict)`` method receives the
    handler's response metadata (``{"status": int, "headers": [[name, value], ...]}``, see
    docs/protocol.md), at most once and before the first chunk; others never see it."""

    def chunk(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def error(self, code: int, message: str) -> None: ...


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
