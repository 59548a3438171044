"""Registers the built-in drivers, through the same hook a third-party package would implement."""

from cocaine.core.hookspecs import hookimpl
from cocaine.drivers.timers import RecurringTimer
from cocaine.drivers.zeromq_server import ZeroMQServer


@hookimpl
def cocaine_register_drivers():
    return [RecurringTimer, ZeroMQServer]
