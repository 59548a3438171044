"""The ``python`` language: the worker loads the module named in ``args`` and calls its handlers."""

from __future__ import annotations

import os
import sys

from cocaine.core.hookspecs import hookimpl
from cocaine.core.languages import Language, WorkerSpec
from cocaine.core.validation import field_error


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


class PythonLanguage(Language):
    name = "python"
    supports_threads = True

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        return resolve_local_path(args, where, suffixes=(".py",))

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        argv = [sys.executable, "-m", "cocaine.python.worker", "--endpoint", endpoint, "--id", worker_id,
                "--app", app, "--path", self.args, "--heartbeat", f"{heartbeat_interval:g}"]
        # Imported only when a thread worker runs: the daemon itself never needs the runtime.
        def run_in_thread(zmq_context) -> int:
            from cocaine.python.worker import serve

            return serve(zmq_context, endpoint=endpoint, worker_id=worker_id, path=self.args,
                         heartbeat=heartbeat_interval)

        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=argv, run_in_thread=run_in_thread)


@hookimpl
def cocaine_register_languages():
    return [PythonLanguage]
