"""The ``perl`` language: the worker (``runtime/cocaine-perl-worker``) loads the file in ``args``
and calls the sub named after the task."""

from __future__ import annotations

import os
from pathlib import Path

from cocaine.core.hookspecs import hookimpl
from cocaine.core.languages import Language, WorkerSpec, probe_runtime, resolve_local_path, worker_args

RUNTIME = Path(__file__).resolve().parent / "runtime" / "cocaine-perl-worker"
NEEDS = "perl with ZMQ::FFI and Data::MessagePack; Debian: libzmq-ffi-perl libdata-messagepack-perl"


def perl() -> str:
    return os.environ.get("COCAINE_PERL") or "perl"


class PerlLanguage(Language):
    name = "perl"

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        path = resolve_local_path(args, where, suffixes=(".pl", ".pm"))
        cls.check_runtime()
        return path

    @classmethod
    def check_runtime(cls) -> None:
        """Raise ConfigError unless perl and the runtime's modules are installed."""
        probe_runtime([perl(), str(RUNTIME), "--check"], language=cls.name, needs=NEEDS)

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        argv = [perl(), str(RUNTIME),
                *worker_args(endpoint=endpoint, worker_id=worker_id, app=app, path=self.args,
                             heartbeat_interval=heartbeat_interval)]
        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=argv)


@hookimpl
def cocaine_register_languages():
    return [PerlLanguage]
