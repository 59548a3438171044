"""Who may do what over management: signed (version 3) requests, replay protection, permissions.

A version 3 request is admitted when, in this order: its user has a key in storage ("unknown user"),
the second frame is that key's signature of the first ("bad signature"), its ``timestamp`` is within
``max_clock_skew`` seconds of the daemon's clock ("stale timestamp"), its ``nonce`` was not used by
the same user within that window, before a restart too ("replayed nonce"), and the user may call the
action ("permission denied"). With ``require_signatures``, version 2 requests are refused ("signature required").
Every refusal is counted by reason and logged (at most :data:`LOG_BURST` lines a second).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from cocaine.core.errors import CocaineError, StorageError
from cocaine.core.management.nonces import MAX_NONCES, Nonces
from cocaine.core.management.signing import verify
from cocaine.core.management.users import UnknownUser, User, Users

log = logging.getLogger(__name__)

REFUSALS = ("unknown user", "bad signature", "stale timestamp", "replayed nonce", "signature required",
            "permission denied")
DEFAULT_MAX_CLOCK_SKEW = 60.0
#: Refusals logged per second; the rest are counted and summarized.
LOG_BURST = 20


class Refused(CocaineError, PermissionError):
    """A request refused for who sent it; ``reason`` is one of :data:`REFUSALS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Busy(CocaineError):
    """Too many signed requests within the replay window, or their nonces cannot be stored."""


class Guard:
    def __init__(self, users: Users, *, require_signatures: bool = False,
                 max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW) -> None:
        self.users = users
        self.require_signatures = require_signatures
        self.max_clock_skew = max_clock_skew
        self.refused: Counter[str] = Counter()
        self.accepted_signed = 0
        self.nonces = Nonces(users.storage, max_clock_skew)
        self.nonces.load()
        self._log_second = 0
        self._logged = 0
        self._unlogged = 0

    def admit(self, request: dict[str, Any], frames: list[bytes], peer: str | None = None) -> User | None:
        """Check a parsed request against its frames; return the signing user (None for version 2).

        :raises Refused: the request is refused; the message never includes key material.
        :raises Busy: the replay window holds too many nonces to take another, or the nonce cannot be
            stored (a request whose replay could not be refused after a restart is not served).
        """
        user = None
        try:
            if request["version"] == 2:
                if self.require_signatures:
                    raise Refused("signature required",
                                  "this daemon serves only signed requests (version 3, see docs/security.md)")
                return None
            user = self._authenticate(request, frames)
            if not user.may(request["action"]):
                raise Refused("permission denied", f"user {user.name!r} may not call {request['action']} "
                                                   f"(allowed: {', '.join(user.permissions)})")
        except Refused as e:
            self.refused[e.reason] += 1
            self._log_refusal(e, request.get("username"), peer)
            raise
        try:
            self.nonces.remember(user.name, request["nonce"], request["timestamp"])
        except StorageError as e:
            log.error("management: cannot store the nonce of a signed request: %s", e)
            raise Busy(f"cannot record the request's nonce, try again later: {e}") from None
        self.accepted_signed += 1
        return user

    def _authenticate(self, request: dict[str, Any], frames: list[bytes]) -> User:
        name = request["username"]
        try:
            user = self.users.get(name)
        except UnknownUser:
            raise Refused("unknown user", f"no key for {name!r} in this daemon's storage") from None
        if len(frames) < 2:
            raise Refused("bad signature", "version 3 requests carry the signature as a second frame")
        if not verify(user.key, frames[0], frames[1]):
            raise Refused("bad signature", f"the signature does not match the request and the key of {name!r}")
        skew = time.time() - request["timestamp"]
        if not abs(skew) <= self.max_clock_skew:
            raise Refused("stale timestamp", f"the request is {abs(skew):.1f} s {'behind' if skew > 0 else 'ahead of'}"
                                             f" the daemon's clock (allowed: {self.max_clock_skew:g} s)")
        self.nonces.forget_expired()
        if self.nonces.seen(name, request["nonce"]):
            raise Refused("replayed nonce", f"this nonce was already used by {name!r} "
                                            f"within the last {self.max_clock_skew:g} s")
        if len(self.nonces) >= MAX_NONCES:
            raise Busy(f"more than {MAX_NONCES} signed requests within {self.max_clock_skew:g} s; try again later")
        return user

    def _log_refusal(self, error: Refused, username: Any, peer: str | None) -> None:
        second = int(time.monotonic())
        if second != self._log_second:
            if self._unlogged:
                log.warning("management: %d more refused requests were not logged", self._unlogged)
            self._log_second, self._logged, self._unlogged = second, 0, 0
        if self._logged >= LOG_BURST:
            self._unlogged += 1
            return
        self._logged += 1
        who = f"user {username!r}" if isinstance(username, str) else "no user"
        log.warning("management: refused a request from %s (%s): %s", peer or "an unknown peer", who, error)

    def info(self) -> dict[str, Any]:
        """The node's ``security`` section of ``info``."""
        try:
            users: Any = len(self.users.names())
        except CocaineError as e:
            users = {"error": str(e)}
        return {
            "signatures": "required" if self.require_signatures else "optional",
            "max-clock-skew": self.max_clock_skew,
            "users": users,
            "signed-requests": self.accepted_signed,
            "refused": {reason: self.refused[reason] for reason in REFUSALS},
        }

