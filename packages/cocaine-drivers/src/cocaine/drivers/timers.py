"""Interval timers. Their jobs have no requester: results go to the app's pubsub endpoint."""

from __future__ import annotations

import math
import time

from cocaine.core.plugin_api import Driver, get_number, get_str, only_keys
from cocaine.drivers.common import OVERLAP_POLICIES, SCOPES, Finished, Overlap, in_cluster


class RecurringTimer(Driver):
    """``recurring-timer``: runs the task every ``interval`` milliseconds.

    Ticks follow a fixed schedule (no drift); if the engine falls behind by more than one interval,
    the missed ticks are skipped rather than fired in a burst. ``overlap`` says what a tick does
    while the previous job still runs: ``allow`` (the default) queues a job anyway, ``skip`` drops
    the tick.

    In a cluster (docs/cluster.md) the ticks fall on multiples of the interval since the epoch, the
    same instants on every node, and each one fires on the one node that claims it.
    """

    name = "recurring-timer"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "interval", "overlap", "scope"), where)
        return {"type": cls.name, "interval": get_number(config, "interval", where),
                "overlap": get_str(config, "overlap", where, default="allow", choices=OVERLAP_POLICIES),
                "scope": get_str(config, "scope", where, default="cluster", choices=SCOPES)}

    def start(self) -> None:
        self.interval = self.config["interval"] / 1000.0
        self.overlap = Overlap(self.config["overlap"])
        self.ticks = 0
        self.lost = 0  # ticks another node fired (or that nobody could claim)
        if in_cluster(self):
            self._scheduled = (math.floor(time.time() / self.interval) + 1) * self.interval
            self._timer = self.context.reactor.call_later(self._scheduled - time.time(), self._cluster_tick)
            return
        self._next = time.monotonic() + self.interval
        self._timer = self.context.reactor.call_at(self._next, self._tick)

    def _cluster_tick(self) -> None:
        scheduled = self._scheduled
        self.context.claim(scheduled, lambda _previous: self._fire(scheduled), self._lost)
        # The next multiple of the interval still ahead: ticks the reactor was too late for are skipped.
        self._scheduled = (math.floor(time.time() / self.interval) + 1) * self.interval
        self._timer = self.context.reactor.call_later(max(0.0, self._scheduled - time.time()), self._cluster_tick)

    def _fire(self, scheduled: float) -> None:
        self.ticks += 1
        self.overlap.submit(self.context, {"tick": self.ticks, "scheduled": scheduled})

    def _lost(self) -> None:
        self.lost += 1

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
                                               "running": self.overlap.running, "elsewhere": self.lost}}


class DriftingTimer(Driver):
    """``drifting-timer``: one job at a time; the next tick comes ``interval`` milliseconds after
    the previous job has ended (succeeded or failed), so the schedule drifts by the jobs' durations.

    In a cluster only the node that owns the task fires; the others try to take it over every
    interval, which succeeds once the owner's lease is gone."""

    name = "drifting-timer"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "interval", "scope"), where)
        return {"type": cls.name, "interval": get_number(config, "interval", where),
                "scope": get_str(config, "scope", where, default="cluster", choices=SCOPES)}

    def start(self) -> None:
        self.interval = self.config["interval"] / 1000.0
        self.ticks = 0
        self.lost = 0
        self.running = False
        self._stopped = False
        self._timer = self.context.reactor.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        scheduled = time.time()
        if in_cluster(self):
            self.context.claim(scheduled, lambda _previous: self._fire(scheduled), self._lost, owner=True)
        else:
            self._fire(scheduled)

    def _fire(self, scheduled: float) -> None:
        self.ticks += 1
        self.running = True
        meta = {"tick": self.ticks, "scheduled": scheduled}
        self.context.submit(None, Finished(self.context.publisher(meta), self._done), meta)

    def _lost(self) -> None:
        self.lost += 1
        self._done(None)

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
        return {**super().info(), "counters": {"ticks": self.ticks, "running": self.running,
                                               "elsewhere": self.lost}}
