"""The nonces of signed requests still inside the replay window, in memory and in the instance's storage.

A nonce is kept until its request's ``timestamp`` + ``max_clock_skew``: past that, the timestamp check
alone refuses a replay. Each one is also a document in the storage namespace ``nonces``, written
before the request is answered, so that a daemon restarted within the window still refuses a replay.
A document's key is ``<timestamp in ms>-<digest of user and nonce>``: loading and pruning read keys
only, and no key reveals a nonce. Expired documents are removed as the window moves on, and at start.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import re
import time

from cocaine.core.errors import StorageError
from cocaine.core.storage import Storage

log = logging.getLogger(__name__)

NONCES = "nonces"  # the storage namespace
#: Nonces remembered at once; past it signed requests wait (bounds memory and storage whatever the rate).
MAX_NONCES = 100_000

_KEY = re.compile(r"^(\d{1,15})-([0-9a-f]{32})$")


def digest(user: str, nonce: str) -> str:
    return hashlib.sha256(f"{user}\0{nonce}".encode()).hexdigest()[:32]


class Nonces:
    def __init__(self, storage: Storage, max_clock_skew: float) -> None:
        self.storage = storage
        self.max_clock_skew = max_clock_skew
        self._seen: set[str] = set()
        self._by_age: list[tuple[int, str]] = []  # heap of (timestamp in ms, digest)

    def __len__(self) -> int:
        return len(self._seen)

    def load(self) -> None:
        """Remember the nonces in storage that are still inside the window; remove the others."""
        for key in self.storage.list(NONCES):
            match = _KEY.match(key)
            if match is None:
                log.warning("storage: %s/%s is not a nonce document; ignored", NONCES, key)
                continue
            stamp, seen = int(match[1]), match[2]
            if seen not in self._seen:
                self._seen.add(seen)
                heapq.heappush(self._by_age, (stamp, seen))
        self.forget_expired()
        if self._seen:
            log.info("replay protection: %d nonces of signed requests still in the window", len(self._seen))

    def seen(self, user: str, nonce: str) -> bool:
        return digest(user, nonce) in self._seen

    def remember(self, user: str, nonce: str, timestamp: float) -> None:
        """Store the nonce, then remember it. :raises StorageError: it could not be stored."""
        stamp, seen = int(timestamp * 1000), digest(user, nonce)
        self.storage.put(NONCES, f"{stamp}-{seen}", {"user": user, "timestamp": timestamp})
        self._seen.add(seen)
        heapq.heappush(self._by_age, (stamp, seen))

    def forget_expired(self) -> None:
        # A stamp is the timestamp rounded down to the millisecond: one more keeps it until its request
        # has surely expired.
        horizon = (time.time() - self.max_clock_skew) * 1000 - 1
        by_age = self._by_age
        while by_age and by_age[0][0] < horizon:
            stamp, seen = heapq.heappop(by_age)
            self._seen.discard(seen)
            try:
                self.storage.remove(NONCES, f"{stamp}-{seen}")
            except StorageError as e:  # the next start prunes it
                log.warning("replay protection: cannot remove an expired nonce: %s", e)
