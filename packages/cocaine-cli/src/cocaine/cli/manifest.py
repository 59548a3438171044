"""Reading a manifest file for ``create``, with its app path made absolute."""

from __future__ import annotations

import json
import os
from typing import Any

from cocaine.cli.errors import ManifestFileError

LOCAL = "local://"


def load_manifest(path: str) -> Any:
    """Read the JSON manifest at ``path``; a relative ``args`` is resolved against its folder.

    Everything else is left for the daemon to validate: its errors name the field at fault.
    """
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except OSError as e:
        raise ManifestFileError(f"cannot read manifest {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ManifestFileError(f"manifest {path} is not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise ManifestFileError(
            f"manifest {path} is not valid JSON: {e.msg} (line {e.lineno} column {e.colno})") from None
    if isinstance(manifest, dict) and isinstance(manifest.get("args"), str):
        manifest["args"] = resolve_args(manifest["args"], os.path.dirname(os.path.abspath(path)))
    return manifest


def resolve_args(args: str, base: str) -> str:
    """``app.py`` or ``local://app.py`` -> the absolute path under ``base``, in the same form.

    The daemon needs absolute paths (its working directory is not the operator's); URLs of other
    schemes and absolute paths pass unchanged.
    """
    scheme = ""
    path = args
    if args.startswith(LOCAL):
        scheme, path = LOCAL, args[len(LOCAL):]
    elif "://" in args:
        return args
    if not path or os.path.isabs(path):
        return args
    return scheme + os.path.normpath(os.path.join(base, path))
