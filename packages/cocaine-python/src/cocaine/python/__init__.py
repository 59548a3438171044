"""cocaine-python: run Python apps in cocaine workers."""

__version__ = "0.1.0"

from cocaine.python.response import Response  # noqa: E402 - after the version, which hatch reads

__all__ = ["Response"]
