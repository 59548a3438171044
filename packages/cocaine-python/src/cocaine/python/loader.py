"""Loading the app's module, and tying a worker's life to the daemon's.

Free of ZeroMQ on purpose: the fork server (forkserver.py) uses both before it forks, when no
ZeroMQ code may have run in it yet.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import signal
import sys
from types import ModuleType


def load_module(path: str, name: str) -> ModuleType:
    """Import the app's file as a module called ``cocaine_app_<name>`` (``name`` made an identifier)."""
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # the app may import its sibling modules
    module_name = "cocaine_app_" + "".join(c if c.isalnum() else "_" for c in name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def die_with_parent() -> None:
    """Exit when the daemon dies, even by SIGKILL: no orphan workers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    expected = os.environ.get("COCAINE_PARENT_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the daemon died before the death signal was armed


def runtime_arguments(description: str, *extra: tuple[str, dict]) -> argparse.ArgumentParser:
    """The command line of a worker or a fork server (docs/protocol.md, "Starting a worker")."""
    parser = argparse.ArgumentParser(description=description)
    for name, options in extra:
        parser.add_argument(name, required=True, **options)
    parser.add_argument("--endpoint", required=True)
    # Every runtime is given the app's name; a worker needs it for nothing (the lines it logs reach
    # the daemon's log named after the app already), a fork server names the app's module after it.
    parser.add_argument("--app", default="app")
    parser.add_argument("--path", required=True)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    return parser


def become_runtime() -> None:
    """What a worker or fork server process does first: die with the daemon, leave Ctrl-C to it."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when its workers stop
    sys.stdout.reconfigure(line_buffering=True)  # each printed line reaches the engine's pipe at once
