"""The language interface: how a worker runs an app's code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class WorkerSpec:
    """Everything a backend needs to start one worker."""

    app: str
    worker_id: str
    endpoint: str  # the engine's ROUTER endpoint the worker connects to
    argv: list[str]  # the command a process backend runs
    env: dict[str, str] = field(default_factory=dict)  # added to the daemon's environment
    #: For the thread backend: runs one worker in the calling thread until it is told to stop and
    #: returns its exit status; it is given the daemon's ZeroMQ context (inproc needs the same one).
    #: None when the language cannot run in-process.
    run_in_thread: Callable[..., int] | None = None


class Language:
    """Base class of every language. Subclasses set ``name`` (the manifest's ``type``)."""

    name: ClassVar[str] = ""
    #: True when ``worker_spec`` fills ``run_in_thread``, so the thread backend can run this language.
    supports_threads: ClassVar[bool] = False

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        """Check the manifest's ``args`` (where the code is); return it normalized.

        :raises ConfigError: naming ``where`` and what was expected.
        """
        raise NotImplementedError

    def __init__(self, args: str) -> None:
        self.args = args

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        """Describe how to start one worker of this app."""
        raise NotImplementedError
