"""cocaine-core: the daemon, engine, worker pools, storage, management protocol and plugin hook specs."""

__version__ = "0.1.0"
