"""The worker backend interface: how workers are started, watched and stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cocaine.core.languages import WorkerSpec

if TYPE_CHECKING:
    from cocaine.core.languages import Language
    from cocaine.core.manifest import EngineConfig


class WorkerHandle:
    """A started worker as its backend sees it."""

    pid: int | None = None

    def exit_fd(self) -> int | None:
        """A file descriptor that becomes readable when the worker exits (None: poll ``returncode``)."""
        return None

    def start_fd(self) -> int | None:
        """While the backend has not yet confirmed that the worker started (a fork server answers
        after the spawn returned): a descriptor that becomes readable when it can, and the engine
        then calls :meth:`confirm`. None once confirmed, or for a handle confirmed at its spawn."""
        return None

    def confirm(self) -> None:
        """Learn whether the worker started (waiting for it if need be): from now on ``pid`` and
        :meth:`exit_fd` are known. Raises OSError, naming why, if it never started."""

    def output_fds(self) -> dict[str, int]:
        """The read ends of the worker's output pipes by stream name (``stdout``, ``stderr``), handed
        over once: the engine reads them, logs them line by line, and closes them. Empty when the
        worker's output is not captured."""
        return {}

    def returncode(self) -> int | None:
        """None while running; otherwise the exit status (negative: killed by that signal)."""
        raise NotImplementedError

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the worker to exit; True if it has."""
        raise NotImplementedError

    def kill(self) -> None:
        """Stop the worker at once."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the handle holds once the worker has exited."""


class Backend:
    """Base class of every backend. Subclasses set ``name`` (the manifest's ``engine.backend``)."""

    name: ClassVar[str] = ""
    #: How this backend's workers reach the engine: "ipc" (other processes) or "inproc" (threads).
    transport: ClassVar[str] = "ipc"

    def __init__(self, zmq_context) -> None:
        self.zmq_context = zmq_context

    def open(self, language: Language, *, app: str, endpoint: str, heartbeat_interval: float,
             config: EngineConfig) -> None:
        """Called once by the pool that owns this backend, before its first spawn: a backend may
        start helpers for this app generation here (the process backend starts a fork server)."""

    def close(self) -> None:
        """The pool is closing: stop the helpers :meth:`open` started (not the workers)."""

    def info(self) -> dict | None:
        """What ``info`` shows of the helpers, if any (under ``pool.fork-server``)."""
        return None

    def spawn(self, spec: WorkerSpec) -> WorkerHandle:
        """Start one worker; raise OSError (or a CocaineError) if it cannot be started."""
        raise NotImplementedError

    def spawn_many(self, specs: list[WorkerSpec]) -> list[WorkerHandle | Exception]:
        """Start several workers at once (a burst): for each spec, its handle or why it could not
        be started. A backend overrides this when starting them together is faster."""
        results: list[WorkerHandle | Exception] = []
        for spec in specs:
            try:
                results.append(self.spawn(spec))
            except Exception as e:  # noqa: BLE001 - reported per worker, as spawn() raising is
                results.append(e)
        return results
