"""Building the C++ worker host (``cocaine-cpp-worker`` and ``libcocaine-cpp-worker.so``) on first use.

The host is compiled from the sources shipped in this package with the system's g++ (or ``$CXX``)
against libzmq (Debian: ``libzmq3-dev``). The result is cached per user under a key made of the
sources and the compiler, so editing the host or switching compilers rebuilds it, and several
daemons (or test runs) starting at once build it only once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cocaine.core.errors import CocaineError

HERE = Path(__file__).resolve().parent
INCLUDE = HERE / "include"
HOST_SOURCES = HERE / "host"
LIBRARY_NAME = "libcocaine-cpp-worker.so"
EXECUTABLE_NAME = "cocaine-cpp-worker"
LIBRARY_SOURCES = ("worker.cpp", "link.cpp")  # main.cpp is the executable's
CXXFLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra"]
NEEDS = "g++ and libzmq3-dev"


class BuildError(CocaineError, OSError):
    """The host cannot be built (no compiler, no libzmq headers, ...); the message says why."""


@dataclass(frozen=True)
class Host:
    executable: Path  # what the process backend runs
    library: Path  # cocaine_serve() and cocaine_serve_in(), for thread-backend workers (inprocess.py)


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX") or "g++")


def cache_root() -> Path:
    explicit = os.environ.get("COCAINE_CPP_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cocaine-cpp"


def _sources() -> list[Path]:
    return sorted([*HOST_SOURCES.glob("*.[ch]pp"), *INCLUDE.glob("cocaine/*.hpp")])


def build_key() -> str:
    digest = hashlib.sha256()
    for part in (*compiler(), *CXXFLAGS):
        digest.update(part.encode() + b"\0")
    for source in _sources():
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def host(build: bool = True) -> Host:
    """The built host, building it first if needed (and ``build``); raises BuildError."""
    folder = cache_root() / build_key()
    found = Host(folder / EXECUTABLE_NAME, folder / LIBRARY_NAME)
    if found.executable.exists() and found.library.exists():
        return found
    if not build:
        raise BuildError("the C++ worker host is not built yet (run: python -m cocaine.cpp build)")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key right now
        if not (found.executable.exists() and found.library.exists()):
            _build(folder, found)
    return found


def _build(folder: Path, target: Host) -> None:
    # The library first: the executable links to it by name, found next to it ($ORIGIN).
    library_tmp = folder / f".{LIBRARY_NAME}.{os.getpid()}"
    _compile([*CXXFLAGS, "-fPIC", "-shared", f"-Wl,-soname,{LIBRARY_NAME}", "-I", str(INCLUDE),
              *(str(HOST_SOURCES / name) for name in LIBRARY_SOURCES), "-o", str(library_tmp),
              "-lzmq", "-ldl", "-pthread"])
    os.replace(library_tmp, target.library)
    executable_tmp = folder / f".{EXECUTABLE_NAME}.{os.getpid()}"
    _compile([*CXXFLAGS, str(HOST_SOURCES / "main.cpp"), "-o", str(executable_tmp), "-L", str(folder),
              f"-l:{LIBRARY_NAME}", "-Wl,-rpath,$ORIGIN", "-pthread"])
    os.replace(executable_tmp, target.executable)


def _compile(arguments: list[str]) -> None:
    command = [*compiler(), *arguments]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"cannot build the C++ worker host (needs {NEEDS}): {e}") from None
    if done.returncode != 0:
        output = done.stderr.decode(errors="replace").strip()
        errors = [line for line in output.splitlines() if "error" in line] or output.splitlines()[-1:]
        raise BuildError(f"cannot build the C++ worker host (needs {NEEDS}): "
                         f"{errors[0] if errors else f'{command[0]} exited with {done.returncode}'}")
