"""The security commands: ``keygen`` and ``user add|list|remove`` (docs/cli.md, docs/security.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from cocaine.cli.errors import KeyFileError
from cocaine.cli.keys import KEY_TYPES, generate_curve_key, generate_signing_key
from cocaine.core.management import ACTIONS
MAX_PUBLIC_KEY_BYTES = 16 << 10


def read_public_key(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            pem = f.read(MAX_PUBLIC_KEY_BYTES + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read public key {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path} is not a PEM public key") from None
    if "PRIVATE KEY" in pem:
        raise KeyFileError(f"{path} is a private key; give the public one (.pub)")
    if len(pem) > MAX_PUBLIC_KEY_BYTES or "PUBLIC KEY-----" not in pem:
        raise KeyFileError(f"{path} is not a PEM public key")
    return pem


def register(app: typer.Typer, request: Callable, reported: Callable) -> None:
    """Add the commands to ``app``; ``request`` and ``reported`` are the CLI's own helpers."""
    users = typer.Typer(help="Manage who may sign management requests.", no_args_is_help=True)

    @users.command("add")
    def user_add(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="The user's name.")],
        public_key: Annotated[str, typer.Argument(metavar="PUBKEY", help="The user's public key file (PEM).")],
        permission: Annotated[list[str] | None, typer.Option(
            "--permission", "-p", metavar="ACTION",
            help=f"An action the user may call, repeatable: {', '.join(ACTIONS)}, or * (default: *).")] = None,
    ) -> None:
        """Let NAME sign requests with the key in PUBKEY."""
        with reported():
            pem = read_public_key(public_key)
        request(ctx, "user-add", users={name: {"public-key": pem, "permissions": permission or ["*"]}})

    @users.command("list")
    def user_list(ctx: typer.Context) -> None:
        """Show every user: key type, key fingerprint and permissions."""
        request(ctx, "user-list")

    @users.command("remove")
    def user_remove(ctx: typer.Context, names: Annotated[list[str], typer.Argument(metavar="NAME")]) -> None:
        """Remove users: their keys stop working at once."""
        request(ctx, "user-remove", users=names)

    app.add_typer(users, name="user")

    @app.command()
    def keygen(
        path: Annotated[str, typer.Argument(help="Where to write the private key; the public one goes next to it.")],
        key_type: Annotated[str, typer.Option(
            "--type", help=f"Signing key type: {' or '.join(KEY_TYPES)}.")] = "ed25519",
        bits: Annotated[int, typer.Option(help="RSA key size.", min=2048, max=8192)] = 3072,
        curve: Annotated[bool, typer.Option(
            "--curve", help="Make a CURVE certificate pair (PATH.key, PATH.key_secret) instead.")] = False,
    ) -> None:
        """Make a key pair: for signing (PATH, mode 0600, and PATH.pub), or for CURVE (--curve)."""
        if key_type not in KEY_TYPES:
            raise typer.BadParameter(f"expected {' or '.join(KEY_TYPES)}, got {key_type!r}", param_hint="--type")
        with reported():
            if curve:
                public, secret = generate_curve_key(path)
                print(f"CURVE secret certificate: {secret}\nCURVE public certificate: {public}")
            else:
                private, public = generate_signing_key(path, key_type, bits)
                print(f"private key: {private}\npublic key:  {public}")
