"""cocaine-js: run JavaScript apps on Node.js in cocaine workers (the runtime is in ``runtime/``)."""

__version__ = "0.1.0"
