"""The ``cocained`` daemon: a node hosting app engines, managed over ZeroMQ."""
