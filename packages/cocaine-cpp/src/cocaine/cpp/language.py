"""The ``cpp`` language: ``args`` is an app's shared library; the worker host dlopens it."""

from __future__ import annotations

from cocaine.core.errors import ConfigError
from cocaine.core.hookspecs import hookimpl
from cocaine.core.languages import RuntimeLanguage
from cocaine.cpp import build


class CppLanguage(RuntimeLanguage):
    name = "cpp"
    suffixes = (".so",)
    needs = build.NEEDS

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


@hookimpl
def cocaine_register_languages():
    return [CppLanguage]
