"""cocaine-drivers: the event sources an app's tasks can use."""

__version__ = "0.1.0"
