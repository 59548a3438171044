"""cocaine-perl: run Perl apps in cocaine workers (the runtime is in ``runtime/``)."""

__version__ = "0.1.0"
