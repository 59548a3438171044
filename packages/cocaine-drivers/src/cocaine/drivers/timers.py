"""Time-based drivers. Their jobs have no requester: results go to the app's pubsub endpoint."""

from __future__ import annotations

import time

from cocaine.core.drivers import Driver
from cocaine.core.validation import get_number, only_keys


class RecurringTimer(Driver):
    """``recurring-timer``: runs the task every ``interval`` milliseconds.

    Ticks follow a fixed schedule (no drift); if the engine falls behind by more than one interval,
    the missed ticks are skipped rather than fired in a burst.
    """

    name = "recurring-timer"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "interval"), where)
        return {"type": cls.name, "interval": get_number(config, "interval", where)}

    def start(self) -> None:
        self.interval = self.config["interval"] / 1000.0
        self.ticks = 0
        self._next = time.monotonic() + self.interval
        self._timer = self.context.reactor.call_at(self._next, self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        meta = {"tick": self.ticks, "scheduled": time.time()}
        self.context.submit(None, self.context.publisher(meta), meta)
        self._next += self.interval
        now = time.monotonic()
        if self._next < now:
            self._next = now + self.interval
        self._timer = self.context.reactor.call_at(self._next, self._tick)

    def stop(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
