"""The ``cpp`` language: ``args`` is an app's shared library; the worker host dlopens it."""

from __future__ import annotations

from cocaine.core.plugin_api import ConfigError, hookimpl, RuntimeLanguage, WorkerSpec
from cocaine.cpp import build


class CppLanguage(RuntimeLanguage):
    name = "cpp"
    suffixes = (".so",)
    needs = build.NEEDS
    supports_threads = True  # the host serves in-process too (cocaine.cpp.inprocess)
    stream_link = True  # the host speaks the protocol over an inherited socket too (host/link.hpp)

    @classmethod
    def runtime_command(cls) -> list[str]:
        return [str(build.host().executable)]

    @classmethod
    def check_runtime(cls) -> None:
        # Building the host on first use is what shows a missing compiler or libzmq.
        try:
            build.host()
        except build.BuildError as e:
            raise ConfigError(f"type {cls.name!r}: {e}") from None
        super().check_runtime()

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        spec = super().worker_spec(app=app, worker_id=worker_id, endpoint=endpoint,
                                   heartbeat_interval=heartbeat_interval)

        def run_in_thread(zmq_context) -> int:
            from cocaine.cpp import inprocess

            return inprocess.serve(zmq_context, endpoint=endpoint, worker_id=worker_id, path=self.args,
                                   heartbeat=heartbeat_interval)

        spec.run_in_thread = run_in_thread
        return spec


@hookimpl
def cocaine_register_languages():
    return [CppLanguage]
