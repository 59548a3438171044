"""``python -m cocaine.cli``: the same as ``cocaine-admin``."""

from cocaine.cli.app import main

main()
