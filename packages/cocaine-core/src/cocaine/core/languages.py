"""The language interface: how a worker runs an app's code."""

from __future__ import annotations

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


class Language:
    """Base class of every language. Subclasses set ``name`` (the manifest's ``type``)."""

    name: ClassVar[str] = ""

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
