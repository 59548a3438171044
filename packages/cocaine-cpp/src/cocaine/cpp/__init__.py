"""cocaine-cpp: run C++ apps (shared libraries built against the SDK in ``include/``) in cocaine workers."""

__version__ = "0.1.0"
