"""The CLI's errors. Each carries the exit status it ends the command with (see docs/cli.md)."""

from __future__ import annotations

#: Exit statuses. 2 is click's own status for a bad command line, so an unreachable daemon gets 3:
#: a script can tell "fix the command" from "the daemon is down, try later".
OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3


class CliError(Exception):
    """Root of the errors cocaine-admin reports as one line on stderr."""

    exit_code = FAILED


class ManifestFileError(CliError, ValueError):
    """The manifest file cannot be read or is not JSON."""


class KeyFileError(CliError, ValueError):
    """A key file cannot be read, written or used."""


class EndpointError(CliError, ValueError):
    """The endpoint is not one ZeroMQ can connect to."""

    exit_code = USAGE


class Unreachable(CliError, TimeoutError):
    """No answer from the daemon within the timeout."""

    exit_code = UNREACHABLE


class CurveRefused(CliError, PermissionError):
    """The daemon's ZAP handler refused this client's CURVE key."""


class BadReply(CliError, ValueError):
    """The daemon answered something that is not a JSON object."""


class RequestFailed(CliError):
    """The daemon answered with an error, for the whole request or for some of its apps."""
