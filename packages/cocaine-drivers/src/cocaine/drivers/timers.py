"""Interval timers. Their jobs have no requester: results go to the app's pubsub endpoint."""

from __future__ import annotations

import time

from cocaine.core.plugin_api import Driver, get_number, get_str, only_keys
from cocaine.drivers.common import OVERLAP_POLICIES, Finished, Overlap


class RecurringTimer(Driver):
    """``recurring-timer``: runs the task every ``interval`` milliseconds.

    Ticks follow a fixed schedule (no drift); if the engine falls behind by more than one interval,
    the missed ticks are skipped rather than fired in a burst. ``overlap`` says what a tick does
    while the previous job still runs: ``allow`` (the default) queues a job anyway, ``skip`` drops
    the tick.
    """

    name = "recurring-timer"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "interval", "overlap"), where)
        return {"type": cls.name, "interval": get_number(config, "interval", where),
                "overlap": get_str(config, "overlap", where, default="allow", choices=OVERLAP_POLICIES)}

    def start(self) -> None:
        self.interval = self.config["interval"] / 1000.0
        self.overlap = Overlap(self.config["overlap"])
        self.ticks = 0
        self._next = time.monotonic() + self.interval
        self._timer = self.context.reactor.call_at(self._next, self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        self.overlap.submit(self.context, {"tick": self.ticks, "scheduled": time.time()})
        self._next += self.interval
        now = time.monotonic()
        if self._next < now:
            self._next = now + self.interval
        self._timer = self.context.reactor.call_at(self._next, self._tick)

    def stop(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()

    def info(self):
        return {**super().info(), "counters": {"ticks": self.ticks, "skipped": self.overlap.skipped,
                                               "running": self.overlap.running}}


class DriftingTimer(Driver):
    """``drifting-timer``: one job at a time; the next tick comes ``interval`` milliseconds after
    the previous job has ended (succeeded or failed), so the schedule drifts by the jobs' durations."""

    name = "drifting-timer"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "interval"), where)
        return {"type": cls.name, "interval": get_number(config, "interval", where)}

    def start(self) -> None:
        self.interval = self.config["interval"] / 1000.0
        self.ticks = 0
        self.running = False
        self._stopped = False
        self._timer = self.context.reactor.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        self.running = True
        meta = {"tick": self.ticks, "scheduled": time.time()}
        self.context.submit(None, Finished(self.context.publisher(meta), self._done), meta)

    def _done(self, code: int | None) -> None:
        self.running = False
        if not self._stopped:
            self._timer = self.context.reactor.call_later(self.interval, self._tick)

    def stop(self) -> None:
        self._stopped = True
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()

    def info(self):
        return {**super().info(), "counters": {"ticks": self.ticks, "running": self.running}}
