"""The ``perl`` language: the worker (``runtime/cocaine-perl-worker``) loads the file in ``args``
and calls the sub named after the task."""

from __future__ import annotations

import os
from pathlib import Path

from cocaine.core.plugin_api import hookimpl, RuntimeLanguage

RUNTIME = Path(__file__).resolve().parent / "runtime" / "cocaine-perl-worker"


class PerlLanguage(RuntimeLanguage):
    name = "perl"
    suffixes = (".pl", ".pm")
    needs = "perl with ZMQ::FFI and Data::MessagePack; Debian: libzmq-ffi-perl libdata-messagepack-perl"
    stream_link = True  # the worker speaks fd:N (Cocaine/Link/Stream.pm), with no ZeroMQ context

    @classmethod
    def runtime_command(cls) -> list[str]:
        return [os.environ.get("COCAINE_PERL") or "perl", str(RUNTIME)]


@hookimpl
def cocaine_register_languages():
    return [PerlLanguage]
