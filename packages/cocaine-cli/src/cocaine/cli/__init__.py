"""cocaine-admin: manage cocaine application servers from the command line."""

__version__ = "0.1.0"
