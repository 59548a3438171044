"""``cocaine-admin``: the command line of the management protocol (create, delete, reload, info,
users), and ``keygen``.

Exit statuses: 0 success; 1 the daemon reported an error (for the request or for any app) or the
manifest file is unusable; 2 a bad command line; 3 no answer from the daemon within ``--timeout``.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from cocaine.cli import __version__, security
from cocaine.cli.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, ManagementClient
from cocaine.cli.errors import FAILED, CliError, RequestFailed
from cocaine.cli.keys import CurveClient, Signer
from cocaine.cli.manifest import load_manifest
from cocaine.cli.output import PROG, Output, app_errors, request_error

DEBUG_VARIABLE = "COCAINE_DEBUG"

app = typer.Typer(
    name=PROG,
    help="Manage the apps of a cocained daemon over its management endpoint.",
    no_args_is_help=True,
    add_completion=False,
    # Our own handler in main() decides between one line and a traceback.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Session:
    client: ManagementClient
    output: Output


def debugging() -> bool:
    return bool(os.environ.get(DEBUG_VARIABLE))


@contextmanager
def reported() -> Iterator[None]:
    """Turn a CliError into one line on stderr and its exit status."""
    try:
        yield
    except CliError as e:
        if debugging():
            traceback.print_exc()
        Output.error(str(e))
        raise typer.Exit(code=e.exit_code) from None


def request(ctx: typer.Context, action: str, apps: Any = None, **fields: Any) -> None:
    """Send one request, print the reply, and fail if the daemon reported any error."""
    session: Session = ctx.obj
    with reported():
        reply = session.client.request(action, apps, **fields)
        session.output.reply(action, reply)
        error = request_error(reply)
        if error is not None:
            raise RequestFailed(f"{session.client.endpoint} refused the request: {error}")
        failures = app_errors(action, reply)
        for name, message in failures:
            Output.error(f"{action} {name}: {message}")
        if failures:
            raise typer.Exit(code=FAILED)


# -- global options -------------------------------------------------------------------------------
def _check_endpoint(value: str) -> str:
    if "://" not in value:
        raise typer.BadParameter(f"expected a ZeroMQ endpoint such as {DEFAULT_ENDPOINT}, got {value!r}")
    return value


def _check_timeout(value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"expected a number of seconds > 0, got {value:g}")
    return value


def _show_version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Option(
        envvar="COCAINE_ENDPOINT", callback=_check_endpoint, metavar="ENDPOINT",
        help="The daemon's management endpoint.")] = DEFAULT_ENDPOINT,
    timeout: Annotated[float, typer.Option(
        callback=_check_timeout, metavar="SECONDS",
        help="How long to wait for the daemon's answer; exit 3 past it.")] = DEFAULT_TIMEOUT,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print the daemon's reply as JSON, for scripts.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
    user: Annotated[str | None, typer.Option(
        envvar="COCAINE_USER", metavar="NAME", help="Sign every request as this user (with --key).")] = None,
    key: Annotated[str | None, typer.Option(
        envvar="COCAINE_KEY", metavar="FILE", help="The user's private key (see keygen).")] = None,
    curve_key: Annotated[str | None, typer.Option(
        envvar="COCAINE_CURVE_KEY", metavar="FILE",
        help="This client's CURVE secret certificate (.key_secret), for a CURVE daemon.")] = None,
    curve_server_key: Annotated[str | None, typer.Option(
        envvar="COCAINE_CURVE_SERVER_KEY", metavar="FILE",
        help="The daemon's CURVE public certificate (.key).")] = None,
) -> None:
    """Manage the apps of a cocained daemon over its management endpoint."""
    if bool(user) != bool(key):
        raise typer.BadParameter("--user and --key go together", param_hint="--user/--key")
    if bool(curve_key) != bool(curve_server_key):
        raise typer.BadParameter("--curve-key and --curve-server-key go together",
                                 param_hint="--curve-key/--curve-server-key")
    signer = curve = None
    if ctx.invoked_subcommand != "keygen":  # making keys needs none
        with reported():
            signer = Signer.load(user, key) if user else None
            curve = CurveClient.load(curve_key, curve_server_key) if curve_key else None
    ctx.obj = Session(ManagementClient(endpoint, timeout, signer=signer, curve=curve), Output(json_output))


# -- commands -------------------------------------------------------------------------------------
@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The app's name.")],
    manifest: Annotated[str, typer.Argument(
        metavar="MANIFEST.json", help="The app's manifest; a relative args path is relative to this file.")],
) -> None:
    """Create an app from its manifest file and start it."""
    with reported():
        raw = load_manifest(manifest)
    request(ctx, "create", {name: raw})


@app.command()
def delete(ctx: typer.Context, names: Annotated[list[str], typer.Argument(metavar="NAME")]) -> None:
    """Stop apps and remove them from storage."""
    request(ctx, "delete", names)


@app.command()
def reload(ctx: typer.Context, names: Annotated[list[str], typer.Argument(metavar="NAME")]) -> None:
    """Restart apps from their stored manifests."""
    request(ctx, "reload", names)


@app.command()
def info(ctx: typer.Context,
         names: Annotated[list[str] | None, typer.Argument(metavar="NAME")] = None) -> None:
    """Show the node and its apps' state and statistics (every app, or the ones named)."""
    request(ctx, "info", names or None)


security.register(app, request, reported)


def main(argv: list[str] | None = None) -> None:
    """The ``cocaine-admin`` entry point."""
    try:
        app(args=argv, prog_name=PROG)
    except Exception as e:  # noqa: BLE001 - a bug: one line, unless the operator asks for more
        if debugging():
            raise
        Output.error(f"internal error: {type(e).__name__}: {e} (set {DEBUG_VARIABLE}=1 for a traceback)")
        sys.exit(FAILED)


if __name__ == "__main__":
    main()
