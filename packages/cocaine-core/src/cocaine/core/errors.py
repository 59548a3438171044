"""One root exception for the project, and the numeric codes that errors carry on the wire."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """Error codes carried by every error reply, whatever the driver (HTTP-like, as in the original)."""

    BAD_REQUEST = 400
    SERVER = 500  # the server failed: a worker died, an engine stopped
    APP = 502  # the app's handler raised
    UNAVAILABLE = 503  # queue full, app broken or stopping
    TIMEOUT = 504  # heartbeat timeout or request deadline


class CocaineError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(CocaineError, ValueError):
    """A manifest, a daemon option or a plugin's configuration is invalid."""


class PluginError(CocaineError, LookupError):
    """A plugin cannot be loaded, or a manifest names a component no plugin provides."""


class StorageError(CocaineError, OSError):
    """The storage cannot read or write an entry."""


class InstanceLocked(StorageError):
    """Another live process serves the storage's instance; ``pid`` is that process (None if unknown)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class ProtocolError(CocaineError, ValueError):
    """A peer sent a message that does not follow the protocol."""


class JobError(CocaineError):
    """A job ended with an error; carries the wire code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{int(code)} {message}")
        self.code = int(code)
        self.message = message
