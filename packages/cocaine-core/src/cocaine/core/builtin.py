"""The plugins cocaine-core itself provides, registered through the same entry point as any other."""

from cocaine.core.backends.process import ProcessBackend
from cocaine.core.backends.thread import ThreadBackend
from cocaine.core.hookspecs import hookimpl
from cocaine.core.storage.files import FilesStorage


@hookimpl
def cocaine_register_backends():
    return [ProcessBackend, ThreadBackend]


@hookimpl
def cocaine_register_storages():
    return [FilesStorage]
