"""cocaine-cluster: nodes that share apps and know each other's load, on etcd."""

__version__ = "0.1.0"
