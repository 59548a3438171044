"""The management protocol: JSON requests over ZeroMQ (docs/management.md)."""
