"""``cron``: runs the task on a crontab schedule (croniter), in a given time zone."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from cocaine.core.plugin_api import Driver, field_error, get_str, only_keys
from cocaine.drivers.common import OVERLAP_POLICIES, Overlap

CATCH_UP_POLICIES = ("once", "skip")
MAX_CATCH_UP_STEPS = 10_000  # missed ticks counted one by one before the schedule restarts from now


def due(schedule: croniter, first: float, now: float) -> tuple[float, int, float | None]:
    """The ticks of ``schedule`` that are due at ``now``, the first of them being ``first``: returns the
    latest due tick, how many earlier ones were missed, and the next tick after ``now`` (None when
    more than MAX_CATCH_UP_STEPS were missed and counting stopped)."""
    scheduled, missed = first, 0
    following = schedule.get_next(float)
    while following <= now:
        scheduled, missed = following, missed + 1
        if missed >= MAX_CATCH_UP_STEPS:
            return scheduled, missed, None
        following = schedule.get_next(float)
    return scheduled, missed, following


class Cron(Driver):
    """Each tick of ``schedule`` queues a job whose result is published.

    A tick is *missed* when the next one is already due by the time the reactor gets to it (the
    daemon was busy, or the clock jumped): with ``catch-up: once`` (the default) one job runs at
    once for the latest due tick and its meta says how many were ``missed``; with ``skip`` none
    runs and the schedule goes on. Ticks that fall while the app is not running are not replayed.
    """

    name = "cron"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "schedule", "timezone", "overlap", "catch-up"), where)
        schedule = get_str(config, "schedule", where)
        expected = ('a crontab schedule: 5 fields "minute hour day month weekday", 6 with seconds '
                    'first, or an alias such as @hourly')
        fields = schedule.split()
        six = len(fields) == 6
        if not (schedule.startswith("@") or len(fields) in (5, 6)) or not croniter.is_valid(
                schedule, second_at_beginning=six):
            raise field_error(f"{where}.schedule", expected, schedule)
        timezone = get_str(config, "timezone", where, default="UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise field_error(f"{where}.timezone", "an IANA time zone such as UTC or Europe/Moscow",
                              timezone) from None
        return {
            "type": cls.name,
            "schedule": schedule,
            "timezone": timezone,
            "overlap": get_str(config, "overlap", where, default="allow", choices=OVERLAP_POLICIES),
            "catch-up": get_str(config, "catch-up", where, default="once", choices=CATCH_UP_POLICIES),
        }

    def start(self) -> None:
        self.overlap = Overlap(self.config["overlap"])
        self.ticks = 0
        self.missed = 0
        self._timer = None
        self._restart(time.time())
        self._arm()

    def _restart(self, now: float) -> None:
        schedule = self.config["schedule"]
        start = datetime.fromtimestamp(now, ZoneInfo(self.config["timezone"]))
        self._schedule = croniter(schedule, start, second_at_beginning=len(schedule.split()) == 6)
        self._next = self._schedule.get_next(float)

    def _arm(self) -> None:
        self._timer = self.context.reactor.call_later(max(0.0, self._next - time.time()), self._fire)

    def _fire(self) -> None:
        now = time.time()
        if now < self._next:  # early: the wall clock went back since the timer was set
            self._arm()
            return
        scheduled, missed, self._next = due(self._schedule, self._next, now)
        if self._next is None:  # too far behind to count: start the schedule again from now
            self._restart(now)
        self.missed += missed
        if missed and self.config["catch-up"] == "skip":
            self.missed += 1  # the latest due tick is skipped too
        else:
            self.ticks += 1
            self.overlap.submit(self.context, {"tick": self.ticks, "scheduled": scheduled, "missed": missed})
        self._arm()

    def stop(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()

    def info(self):
        return {**super().info(), "counters": {"ticks": self.ticks, "missed": self.missed,
                                               "skipped": self.overlap.skipped, "next": self._next}}
