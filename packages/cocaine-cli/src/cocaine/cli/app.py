"""``cocaine-admin``: the command line of the management protocol (create, delete, reload, info,
users), ``keygen``, and monitoring: ``tail`` (an app's pubsub stream), ``call`` (one request to a
task), ``top`` (a live view).

Exit statuses: 0 success; 1 the daemon reported an error (for the request or for any app) or the
manifest file is unusable; 2 a bad command line; 3 no answer from the daemon within ``--timeout``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from cocaine.cli import __version__, calls, security, tail as tailing, top as live
from cocaine.cli.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, ManagementClient
from cocaine.cli.endpoints import connectable
from cocaine.cli.errors import FAILED, OK, USAGE, CliError, RequestFailed
from cocaine.cli.keys import CurveClient, Signer
from cocaine.cli.manifest import load_manifest
from cocaine.cli.output import (PROG, Output, Response, app_errors, event_json, format_event, format_nodes,
                                request_error)

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


@app.command()
def nodes(ctx: typer.Context) -> None:
    """Show the cluster as this node sees it: every node, its address, whether it is up, and its
    apps with their load (docs/cluster.md). With --json, the cluster part of info as is."""
    session: Session = ctx.obj
    with reported():
        reply = session.client.request("info", None)
        error = request_error(reply)
        if error is not None:
            raise RequestFailed(f"{session.client.endpoint} refused the request: {error}")
        cluster = reply.get("cluster")
        if not isinstance(cluster, dict):
            raise CliError(f"{session.client.endpoint} is not in a cluster (start cocained with --cluster)")
        if session.output.json_mode:
            print(json.dumps(cluster, indent=2))
        else:
            print("\n".join(format_nodes(cluster)))


def app_info(session: Session, name: str) -> dict[str, Any]:
    """One app's ``info``; a CliError if the daemon refuses or does not know the app."""
    reply = session.client.request("info", [name])
    error = request_error(reply)
    if error is not None:
        raise RequestFailed(f"{session.client.endpoint} refused the request: {error}")
    info = (reply.get("apps") or {}).get(name)
    if not isinstance(info, dict) or ("error" in info and "state" not in info):
        raise RequestFailed(f"{name}: {info.get('error') if isinstance(info, dict) else 'no such app'}")
    return info


@app.command()
def tail(ctx: typer.Context,
         name: Annotated[str, typer.Argument(metavar="APP", help="The app whose stream to follow.")],
         topics: Annotated[list[str] | None, typer.Option(
             "--topic", metavar="PREFIX",
             help="Only topics starting with PREFIX (repeatable), e.g. '@log', '@worker', 'tick '.")] = None,
         count: Annotated[int | None, typer.Option(
             min=1, metavar="N", help="Exit after N messages.")] = None,
         connect: Annotated[str | None, typer.Option(
             metavar="ENDPOINT", help="Connect here instead of the app's pubsub endpoint as info shows it.")] = None,
         ) -> None:
    """Follow an app's pubsub stream: results, statistics, worker events and log lines (Ctrl-C stops).

    One readable line per message; with --json, one JSON object per line:
    {"topic": ..., "meta": {...}, "payload": [...]}.
    """
    session: Session = ctx.obj
    with reported():
        if connect is None:
            endpoint = app_info(session, name).get("pubsub")
            if not endpoint:
                raise CliError(f"{name}: the app has no pubsub endpoint (manifest key pubsub.endpoint)")
            connect = connectable(endpoint, session.client.endpoint)
        try:
            for topic, meta, payload in tailing.follow(connect, topics or [], count, session.client.curve):
                if session.output.json_mode:
                    print(event_json(topic, meta, payload), flush=True)
                else:
                    print("\n".join(format_event(topic, meta, payload)), flush=True)
        except KeyboardInterrupt:
            pass


@app.command()
def call(ctx: typer.Context,
         name: Annotated[str, typer.Argument(metavar="APP")],
         task: Annotated[str, typer.Argument(metavar="TASK")],
         data: Annotated[str, typer.Argument(
             metavar="[DATA|-]", help="The request body; - reads it from stdin. Default: empty.")] = "",
         cluster: Annotated[str | None, typer.Option(
             metavar="etcd://HOST:PORT[,...] | [NAME=]ENDPOINT[,...]",
             help="Send to the least loaded of the nodes serving the app's native-server task: the "
                  "cluster's etcd, or a list of the task's endpoints. The daemon is not asked.")] = None,
         instance: Annotated[str, typer.Option(
             envvar="COCAINE_INSTANCE", metavar="NAME", help="With --cluster etcd://...: the cluster's name "
                                                             "(cocained --instance).")] = "default",
         ) -> None:
    """Send one request to an app's task and write the response to stdout as it arrives.

    On a terminal, a newline ends the response if it has none; piped, the bytes are the app's alone.
    Works with tasks served by a native-server or a zeromq-server (the chunks stream from a native-server
    and from a zeromq-server with "replies": "stream", at the pace stdout takes them). An error reply
    exits 1 with its code and message; no reply within --timeout exits 3 (native-server: between two
    chunks; with --cluster, --timeout is the whole request's deadline, across resends).
    """
    session: Session = ctx.obj
    with reported():
        client = session.client
        if cluster is not None:
            chunks = calls.call_cluster(cluster, instance, name, task, _body(data), client.timeout, client.curve)
        else:
            detail = (app_info(session, name).get("tasks") or {}).get(task)
            if detail is None:
                raise CliError(f"{name} has no task {task!r}")
            caller = calls.caller_for(detail)
            if caller is None or "endpoint" not in detail:
                known = ", ".join(sorted(calls.CALLERS))
                raise CliError(f"{name} {task}: a {detail.get('type')} task takes no requests "
                               f"(call works with {known})")
            chunks = caller(connectable(detail["endpoint"], client.endpoint), _body(data), client.timeout,
                            client.curve)
        response = Response()
        try:
            for chunk in chunks:
                response.write(chunk)
        except CliError as e:
            raise e.within(f"call {name} {task}") from None
        finally:
            response.end()


def _body(data: str) -> bytes:
    return sys.stdin.buffer.read() if data == "-" else data.encode()


@app.command()
def top(ctx: typer.Context,
        interval: Annotated[float, typer.Option(
            callback=_check_timeout, metavar="SECONDS", help="Seconds between refreshes.")] = 1.0,
        ) -> None:
    """A live view of the node: apps, workers, queues, requests/s with history, latency, errors.

    Press q (or Ctrl-C) to quit. When stdout is not a terminal, prints one view and exits.
    """
    session: Session = ctx.obj
    with reported():
        # A poll must not hold the screen (and the q key) for long when the daemon does not answer.
        client = session.client
        live.run(ManagementClient(client.endpoint, min(client.timeout, max(interval, 1.0)), signer=client.signer,
                                  curve=client.curve), interval)


security.register(app, request, reported)


def _click_error(name: str) -> type[Exception]:
    """One of click's exception classes: typer vendors click in newer releases, so find it from
    typer's own ``BadParameter``."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


UsageError = _click_error("UsageError")
ClickException = _click_error("ClickException")


def main(argv: list[str] | None = None) -> None:
    """The ``cocaine-admin`` entry point. Every error is one line on stderr (docs/cli.md); a usage
    error (status 2) names the ``--help`` that shows the usage."""
    try:
        status = app(args=argv, prog_name=PROG, standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # a bare group has printed its help already
            command = e.ctx.command_path if e.ctx is not None else PROG
            Output.error(f"{e.format_message().rstrip('.')} (see {command} --help)")
        sys.exit(USAGE)
    except ClickException as e:
        Output.error(e.format_message())
        sys.exit(e.exit_code)
    except typer.Abort:
        Output.error("aborted")
        sys.exit(FAILED)
    except Exception as e:  # noqa: BLE001 - a bug: one line, unless the operator asks for more
        if debugging():
            raise
        Output.error(f"internal error: {type(e).__name__}: {e} (set {DEBUG_VARIABLE}=1 for a traceback)")
        sys.exit(FAILED)
    sys.exit(status if isinstance(status, int) else OK)


if __name__ == "__main__":
    main()
