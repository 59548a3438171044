"""``python -m cocaine.js runtime``: print the runtime's folder (where its npm packages go)."""

from __future__ import annotations

import sys

from cocaine.js.language import RUNTIME


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["runtime"]:
        print(RUNTIME)
        return 0
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
