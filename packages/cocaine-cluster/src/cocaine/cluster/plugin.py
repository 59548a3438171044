"""The entry point: cocaine-cluster registers the ``etcd`` storage through the storages hook."""

from cocaine.cluster.storage import EtcdStorage
from cocaine.core.hookspecs import hookimpl


@hookimpl
def cocaine_register_storages():
    return [EtcdStorage]
