"""The language interface: how a worker runs an app's code."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from cocaine.core.errors import ConfigError
from cocaine.core.validation import field_error


@dataclass
class WorkerSpec:
    """Everything a backend needs to start one worker."""

    app: str
    worker_id: str
    endpoint: str  # the engine's ROUTER endpoint the worker connects to, or ``fd:N`` (its stream link)
    argv: list[str]  # the command a process backend runs
    env: dict[str, str] = field(default_factory=dict)  # added to the daemon's environment
    #: For the thread backend: runs one worker in the calling thread until it is told to stop and
    #: returns its exit status; it is given the daemon's ZeroMQ context (inproc needs the same one).
    #: None when the language cannot run in-process.
    run_in_thread: Callable[..., int] | None = None
    #: The worker's end of its stream link (``endpoint`` is ``fd:N``, N its descriptor), or None over
    #: ZeroMQ. The backend hands it to the worker (a process inherits it; a thread takes it over with
    #: ``detach()``); the pool closes the daemon's copy once the backend returns.
    link: socket.socket | None = None


class Language:
    """Base class of every language. Subclasses set ``name`` (the manifest's ``type``)."""

    name: ClassVar[str] = ""
    #: True when ``worker_spec`` fills ``run_in_thread``, so the thread backend can run this language.
    supports_threads: ClassVar[bool] = False
    #: True when its workers also speak the protocol over a stream link, ``--endpoint fd:N``, an
    #: inherited Unix stream socket (docs/protocol.md, "Links"): the pool then gives each worker one
    #: instead of a ZeroMQ connection, and the fork server (if any) gets ``--endpoint fd``.
    stream_link: ClassVar[bool] = False
    #: True when a worker runs the jobs it holds at the same time (JavaScript's async handlers), so
    #: that its rate grows with them: the pool then always gives it ``concurrency`` jobs, rather than
    #: what it expects it to finish within 100 ms one after the other (docs/pools.md).
    runs_jobs_concurrently: ClassVar[bool] = False

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

    def fork_server_argv(self, *, app: str, endpoint: str, heartbeat_interval: float) -> list[str] | None:
        """The command of a fork server for this app's workers (cocaine/core/backends/forkserver.py
        specifies what it must do), or None when the language has none."""
        return None


# -- helpers shared by language plugins ---------------------------------------------------------------

def resolve_local_path(args, where: str, *, suffixes: tuple[str, ...]) -> str:
    """``local:///abs/path`` or a plain absolute path to an existing file -> the absolute path."""
    expected = "an absolute path or local:///absolute/path to an existing file"
    if not isinstance(args, str) or not args:
        raise field_error(where, expected, args) if args is not None else field_error(where, expected)
    path = args[len("local://"):] if args.startswith("local://") else args
    if not os.path.isabs(path):
        raise field_error(where, expected, args)
    if not os.path.isfile(path):
        raise field_error(where, f"{expected} (no such file)", args)
    if suffixes and not path.endswith(suffixes):
        raise field_error(where, f"a file ending in {' or '.join(suffixes)}", args)
    return path


def worker_args(*, endpoint: str, worker_id: str, app: str, path: str, heartbeat_interval: float) -> list[str]:
    """The command-line arguments every bundled runtime takes (docs/protocol.md, "Starting a worker")."""
    return ["--endpoint", endpoint, "--id", worker_id, "--app", app, "--path", path,
            "--heartbeat", f"{heartbeat_interval:g}"]


_usable: set[tuple[str, ...]] = set()  # runtimes that passed probe_runtime, never probed again


def probe_runtime(argv: list[str], *, language: str, needs: str, timeout: float = 30.0) -> None:
    """Run ``argv`` (a runtime's self-check) and raise ConfigError naming ``type`` unless it exits 0.

    Called by ``validate_args`` so that an app whose runtime is missing (no interpreter, a module not
    installed) is refused when it is created, with the reason, instead of failing every worker start.
    Only successes are remembered: installing the missing piece fixes the next ``create``.
    """
    key = tuple(argv)
    if key in _usable:
        return
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"type {language!r}: cannot run {argv[0]} ({needs}): {e}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).decode(errors="replace").strip()
        reason = output.splitlines()[0] if output else f"exit status {done.returncode}"
        raise ConfigError(f"type {language!r}: the runtime is not usable ({needs}): {reason}")
    _usable.add(key)


class RuntimeLanguage(Language):
    """A language whose workers are a runtime command (an interpreter and its worker script, a
    compiled host) given the common worker arguments, and which checks at ``create`` that the
    runtime is installed. Subclasses set ``name``, ``suffixes`` and ``needs`` and implement
    ``runtime_command``."""

    suffixes: ClassVar[tuple[str, ...]] = ()  # what ``args`` may end in
    needs: ClassVar[str] = ""  # what to install when the runtime is missing, for the error message

    @classmethod
    def runtime_command(cls) -> list[str]:
        """The command that starts a worker, before the worker arguments; ``--check`` appended to
        it must exit 0 when the runtime is usable."""
        raise NotImplementedError

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        path = resolve_local_path(args, where, suffixes=cls.suffixes)
        cls.check_runtime()
        return path

    @classmethod
    def check_runtime(cls) -> None:
        """Raise ConfigError naming ``type`` and ``needs`` unless the runtime is usable."""
        probe_runtime([*cls.runtime_command(), "--check"], language=cls.name, needs=cls.needs)

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        argv = [*self.runtime_command(), *worker_args(endpoint=endpoint, worker_id=worker_id, app=app,
                                                       path=self.args, heartbeat_interval=heartbeat_interval)]
        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=argv)
