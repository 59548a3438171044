"""The ``js`` language: the worker (``runtime/worker.js`` on Node.js) loads the module in ``args``
and calls the exported function named after the task."""

from __future__ import annotations

import os
from pathlib import Path

from cocaine.core.hookspecs import hookimpl
from cocaine.core.languages import Language, WorkerSpec, probe_runtime, resolve_local_path, worker_args

RUNTIME = Path(__file__).resolve().parent / "runtime"
WORKER = RUNTIME / "worker.js"
NEEDS = (f"Node.js 18+ and the npm packages in {RUNTIME}/package.json: "
         f"run npm ci --omit=dev --ignore-scripts --prefix {RUNTIME}")


def node() -> str:
    return os.environ.get("COCAINE_NODE") or "node"


class JsLanguage(Language):
    name = "js"

    @classmethod
    def validate_args(cls, args, where: str) -> str:
        path = resolve_local_path(args, where, suffixes=(".js", ".cjs", ".mjs"))
        cls.check_runtime()
        return path

    @classmethod
    def check_runtime(cls) -> None:
        """Raise ConfigError unless node and the runtime's npm packages are installed."""
        probe_runtime([node(), str(WORKER), "--check"], language=cls.name, needs=NEEDS)

    def worker_spec(self, *, app: str, worker_id: str, endpoint: str, heartbeat_interval: float) -> WorkerSpec:
        argv = [node(), str(WORKER),
                *worker_args(endpoint=endpoint, worker_id=worker_id, app=app, path=self.args,
                             heartbeat_interval=heartbeat_interval)]
        return WorkerSpec(app=app, worker_id=worker_id, endpoint=endpoint, argv=argv)


@hookimpl
def cocaine_register_languages():
    return [JsLanguage]
