"""The ``python`` language: the worker loads the module named in ``args`` and calls its handlers."""

from __future__ import annotations

import sys

from cocaine.core.plugin_api import hookimpl, Language, resolve_local_path, worker_args, WorkerSpec


class PythonLanguage(Language):
    name = "python"
    supports_threads = True
    stream_link = True

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        return resolve_local_path(args, where, suffixes=(".py",))

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        argv = [sys.executable, "-m", "cocaine.python.worker",
                *worker_args(endpoint=endpoint, worker_id=worker_id, app=app, path=self.args,
                             heartbeat_interval=heartbeat_interval)]
        # Imported only when a thread worker runs: the daemon itself never needs the runtime.
        def run_in_thread(zmq_context) -> int:
            from cocaine.python.worker import serve

            return serve(zmq_context, endpoint=endpoint, worker_id=worker_id, path=self.args,
                         heartbeat=heartbeat_interval)

        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=argv, run_in_thread=run_in_thread)

    def fork_server_argv(self, *, app: str, endpoint: str, heartbeat_interval: float) -> list[str]:
        return [sys.executable, "-m", "cocaine.python.forkserver", "--endpoint", endpoint, "--app", app,
                "--path", self.args, "--heartbeat", f"{heartbeat_interval:g}"]


@hookimpl
def cocaine_register_languages():
    return [PythonLanguage]
