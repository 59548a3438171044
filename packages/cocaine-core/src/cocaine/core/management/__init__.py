"""The management protocol: JSON requests over ZeroMQ (docs/management.md). Its words are defined
here once, for the daemon and for clients (``cocaine-admin``)."""

#: Every action of the protocol; a user's ``permissions`` name some of them, or ``"*"`` for all.
ACTIONS = ("create", "delete", "reload", "info", "user-add", "user-list", "user-remove")
USER_ACTIONS = ("user-add", "user-list", "user-remove")

#: The ``version`` of a request: one JSON frame, or signed (the JSON frame and its signature).
UNSIGNED_VERSION = 2
SIGNED_VERSION = 3
VERSIONS = (UNSIGNED_VERSION, SIGNED_VERSION)
