"""Timers that fire once per cluster: each scheduled tick is claimed in one etcd transaction.

Per task, ``/cocaine/<instance>/timers/<app>/<task>`` holds the scheduled time of the last tick fired
anywhere (fixed-width milliseconds, then the node's name, so that etcd's byte-wise comparison is a
comparison of times). A node fires a tick only if its transaction succeeds, and it succeeds only if

- that time is earlier than the tick's (no tick ever fires twice, whichever node asks, however late);
- this node's own key still has the create revision it had when this node joined (fencing: a node
  whose lease expired, killed, frozen or cut off, cannot claim anything after it wakes up);
- for drifting-timer and manual-scheduler, whose ticks are not the same instants on every node, this
  node owns the task: ``.../timers/<app>/<task>/owner`` names it, under its lease, so that another
  node takes the task over once this one is gone.
"""

from __future__ import annotations

import asyncio
import logging

from aetcd.exceptions import ClientError

from cocaine.cluster import records
from cocaine.cluster.etcd import Unavailable, cancelled, describe

log = logging.getLogger(__name__)

WIDTH = 16  # digits of milliseconds since the epoch: byte order is time order


def encode_time(scheduled: float) -> bytes:
    return f"{round(scheduled * 1000):0{WIDTH}d}".encode()


def decode_time(value: bytes) -> float | None:
    try:
        return int(value[:WIDTH]) / 1000.0
    except ValueError:
        return None


class TickClaims:
    def __init__(self, storage, membership) -> None:
        self.storage = storage
        self.membership = membership
        self.prefix = records.instance_prefix(storage.instance) + "timers/"
        self.claimed = 0
        self.refused = 0

    def claim(self, context, scheduled: float, on_won, on_lost, *, owner: bool = False) -> None:
        """From an engine's reactor: decide on the etcd thread, answer on the reactor."""
        reactor = context.reactor

        def answer(won: bool, previous: float | None) -> None:
            try:
                if won:
                    reactor.call_soon_threadsafe(on_won, previous)
                elif on_lost is not None:
                    reactor.call_soon_threadsafe(on_lost)
            except RuntimeError:  # the engine stopped meanwhile: nothing to fire
                pass

        async def decide() -> None:
            try:
                won, previous = await self._claim(context.app, context.task, scheduled, owner)
            except asyncio.CancelledError:
                if cancelled():
                    raise
                won, previous = False, None
            except (Unavailable, ClientError) as e:
                log.warning("app %s: task %s: tick at %.3f not fired: cluster storage unavailable: %s",
                            context.app, context.task, scheduled, describe(e))
                won, previous = False, None
            except Exception:  # noqa: BLE001 - an unclaimed tick is not fired, and said so
                log.exception("app %s: task %s: cannot claim the tick at %.3f", context.app, context.task, scheduled)
                won, previous = False, None
            if won:
                self.claimed += 1
            else:
                self.refused += 1
            answer(won, previous)

        self.storage.etcd.spawn(decide())

    async def _claim(self, app: str, task: str, scheduled: float, owner: bool) -> tuple[bool, float | None]:
        membership = self.membership
        revision, lease = membership.create_revision, membership.lease_id
        if revision is None or lease is None:  # not (or no longer) a member: nobody to fence with
            return False, None
        key = f"{self.prefix}{app}/{task}".encode()
        owner_key = key + b"/owner"
        me = membership.name.encode()
        node_key = membership.key.encode()
        stamp = encode_time(scheduled)

        async def attempt(client):
            tx = client.transactions
            # The task's first tick anywhere: a last tick at time zero, so that the claim can compare.
            await client.transaction(compare=[tx.version(key) == 0], success=[tx.put(key, encode_time(0))],
                                     failure=[])
            guard = [tx.create(node_key) == revision, tx.value(key) < stamp]
            fire = [tx.get(key), tx.put(key, stamp + b" " + me)]
            if not owner:
                return await client.transaction(compare=guard, success=fire, failure=[])
            # Owned by this node already, or by nobody (taking it over), never by another.
            held = await client.transaction(compare=[*guard, tx.value(owner_key) == me], success=fire, failure=[])
            if held[0]:
                return held
            return await client.transaction(compare=[*guard, tx.version(owner_key) == 0],
                                            success=[*fire, tx.put(owner_key, me, lease=lease)], failure=[])

        succeeded, responses = await self.storage.etcd.run(attempt)
        if not succeeded:
            return False, None
        before = responses[0][0][0] if responses and responses[0] else None
        previous = decode_time(before) if before else None
        return True, previous or None
