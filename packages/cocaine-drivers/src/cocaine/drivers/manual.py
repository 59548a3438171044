"""``manual-scheduler``: the app decides when its task runs next, in each run's answer."""

from __future__ import annotations

import json
import logging
import time

from cocaine.core.plugin_api import Code, Driver, get_number, only_keys

log = logging.getLogger(__name__)

MAX_DELAY = 366 * 86400.0  # an answer further ahead than this is a broken answer


class ManualScheduler(Driver):
    """Runs the task ``first`` milliseconds after the app starts, then whenever the previous run's
    answer says (docs/drivers.md has the contract): a number of seconds to wait, ``{"delay":
    seconds}`` or ``{"at": unix-time}``. Runs never overlap. A run that fails, or whose answer is
    not one of those, is reported on the app's pubsub endpoint as an error, and the next run comes
    ``retry`` milliseconds later."""

    name = "manual-scheduler"
    publishes = True

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "first", "retry"), where)
        return {"type": cls.name,
                "first": get_number(config, "first", where, default=0, exclusive=False),
                "retry": get_number(config, "retry", where, default=60_000)}

    def start(self) -> None:
        self.runs = 0
        self.broken = 0
        self.failed = 0
        self.running = False
        self._stopped = False
        self._timer = None
        self._schedule(self.config["first"] / 1000.0)

    def _schedule(self, delay: float) -> None:
        self.next_at = time.time() + delay
        self._timer = self.context.reactor.call_later(delay, self._run)

    def _run(self) -> None:
        self.runs += 1
        self.running = True
        self.next_at = None
        meta = {"run": self.runs, "scheduled": time.time()}
        self.context.submit(None, Answer(self, self.context.publisher(meta)), meta)

    def answered(self, delay: float | None, problem: str | None, failed: bool) -> None:
        self.running = False
        if problem is not None:
            if failed:
                self.failed += 1
            else:
                self.broken += 1
                log.warning("app %s: task %s: %s", self.context.app, self.context.task, problem)
            delay = self.config["retry"] / 1000.0
        if not self._stopped:
            self._schedule(delay)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def info(self):
        return {**super().info(), "counters": {"runs": self.runs, "failed": self.failed,
                                               "broken-answers": self.broken, "running": self.running,
                                               "next": self.next_at}}


def parse_answer(body: bytes, now: float) -> float:
    """The delay in seconds that a run's answer asks for; ValueError says what is wrong with it."""
    expected = 'expected a number of seconds, {"delay": seconds} or {"at": unix-time}'
    try:
        answer = json.loads(body)
    except ValueError:
        raise ValueError(f"{expected}, got {body[:100]!r}") from None
    if isinstance(answer, dict) and len(answer) == 1 and ("delay" in answer or "at" in answer):
        key, value = next(iter(answer.items()))
    else:
        key, value = "delay", answer
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{expected}, got {body[:100]!r}")
    delay = value if key == "delay" else value - now
    if key == "delay" and delay < 0:
        raise ValueError(f"{expected}: the delay must be >= 0, got {value!r}")
    if delay > MAX_DELAY:
        raise ValueError(f"{expected}: at most a year ahead, got {body[:100]!r}")
    return max(0.0, delay)


class Answer:
    """Publishes a run's result and tells the scheduler when to run next."""

    __slots__ = ("scheduler", "publisher", "chunks")

    def __init__(self, scheduler: ManualScheduler, publisher) -> None:
        self.scheduler = scheduler
        self.publisher = publisher
        self.chunks: list[bytes] = []

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def end(self) -> None:
        body = b"".join(self.chunks)
        try:
            delay = parse_answer(body, time.time())
        except ValueError as e:
            problem = f"bad answer to manual-scheduler: {e}"
            self.publisher.error(Code.APP, problem)
            self.scheduler.answered(None, problem, failed=False)
            return
        for chunk in self.chunks:
            self.publisher.chunk(chunk)
        self.publisher.end()
        self.scheduler.answered(delay, None, failed=False)

    def error(self, code: int, message: str) -> None:
        self.publisher.error(code, message)
        self.scheduler.answered(None, message, failed=True)
