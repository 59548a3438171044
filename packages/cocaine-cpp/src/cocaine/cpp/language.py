"""The ``cpp`` language: ``args`` is an app's shared library; the worker host dlopens it."""

from __future__ import annotations

from cocaine.core.errors import ConfigError
from cocaine.core.hookspecs import hookimpl
from cocaine.core.languages import Language, WorkerSpec, probe_runtime, resolve_local_path, worker_args
from cocaine.cpp import build


class CppLanguage(Language):
    name = "cpp"

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        path = resolve_local_path(args, where, suffixes=(".so",))
        cls.check_runtime()
        return path

    @classmethod
    def check_runtime(cls) -> None:
        """Build the worker host if needed (a missing compiler or libzmq shows here) and run it once."""
        try:
            executable = build.host().executable
        except build.BuildError as e:
            raise ConfigError(f"type {cls.name!r}: {e}") from None
        probe_runtime([str(executable), "--check"], language=cls.name, needs=build.NEEDS)

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        argv = [str(build.host().executable),
                *worker_args(endpoint=endpoint, worker_id=worker_id, app=app, path=self.args,
                             heartbeat_interval=heartbeat_interval)]
        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=argv)


@hookimpl
def cocaine_register_languages():
    return [CppLanguage]
