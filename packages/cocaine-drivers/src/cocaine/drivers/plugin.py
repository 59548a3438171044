"""Registers the built-in drivers, through the same hook a third-party package would implement."""

from cocaine.core.plugin_api import hookimpl
from cocaine.drivers.cron import Cron
from cocaine.drivers.filesystem import FilesystemMonitor
from cocaine.drivers.http.server import HttpServer
from cocaine.drivers.manual import ManualScheduler
from cocaine.drivers.native_server import NativeServer
from cocaine.drivers.raw_socket import RawSocketServer
from cocaine.drivers.timers import DriftingTimer, RecurringTimer
from cocaine.drivers.zeromq_server import ZeroMQServer
from cocaine.drivers.zeromq_sources import ZeroMQSink, ZeroMQSubscriber


@hookimpl
def cocaine_register_drivers():
    return [RecurringTimer, DriftingTimer, Cron, ManualScheduler, FilesystemMonitor, ZeroMQServer, ZeroMQSink,
            ZeroMQSubscriber, NativeServer, RawSocketServer, HttpServer]
