"""cocaine-python: run Python apps in cocaine workers."""

__version__ = "0.1.0"
