"""Why workers exit: the reasons monitoring reports (``@worker exited``, the exits metric) and how
an exit status reads."""

from __future__ import annotations

import signal

IDLE = "idle"
RELOAD = "reload"
STOPPING = "stopping"
HEARTBEAT_TIMEOUT = "heartbeat-timeout"
STARTUP_FAILURE = "startup-failure"
CRASH = "crash"
PROTOCOL_ERROR = "protocol-error"


def signal_name(returncode: int | None) -> str | None:
    """``SIGKILL`` for a worker killed by it (a negative return code), else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is gone"
    name = signal_name(returncode)
    return f"was killed by {name}" if name else f"exited with status {returncode}"
