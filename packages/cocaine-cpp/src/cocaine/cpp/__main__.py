"""``python -m cocaine.cpp COMMAND``: the paths a C++ app's build needs, and building the host.

    include   print the SDK's include folder (for g++ -I)
    build     build the worker host now (it is otherwise built on first use); print where it is
"""

from __future__ import annotations

import sys

from cocaine.cpp import build


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "help"
    if command == "include":
        print(build.INCLUDE)
    elif command == "build":
        try:
            host = build.host()
        except build.BuildError as e:
            print(f"cocaine.cpp: {e}", file=sys.stderr)
            return 1
        print(host.executable)
        print(host.library)
    else:
        print(__doc__.strip(), file=sys.stderr if command != "help" else sys.stdout)
        return 0 if command == "help" else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
