"""The ``js`` language: the worker (``runtime/worker.js`` on Node.js) loads the module in ``args``
and calls the exported function named after the task."""

from __future__ import annotations

import os
from pathlib import Path

from cocaine.core.plugin_api import hookimpl, RuntimeLanguage

RUNTIME = Path(__file__).resolve().parent / "runtime"


class JsLanguage(RuntimeLanguage):
    name = "js"
    suffixes = (".js", ".cjs", ".mjs")
    stream_link = True  # runtime/lib/link.js: --endpoint fd:N, and no zeromq loaded
    runs_jobs_concurrently = True  # an async handler awaits while the next job starts
    needs = (f"Node.js 18+ and the npm packages in {RUNTIME}/package.json: "
             f"run npm ci --omit=dev --ignore-scripts --prefix {RUNTIME}")

    @classmethod
    def runtime_command(cls) -> list[str]:
        return [os.environ.get("COCAINE_NODE") or "node", str(RUNTIME / "worker.js")]


@hookimpl
def cocaine_register_languages():
    return [JsLanguage]
