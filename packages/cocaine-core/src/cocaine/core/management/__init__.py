"""The management protocol: JSON requests over ZeroMQ (docs/management.md)."""

#: Every action of the protocol; a user's ``permissions`` name some of them, or ``"*"`` for all.
ACTIONS = ("create", "delete", "reload", "info", "user-add", "user-list", "user-remove")
