"""Time-based drivers end to end: recurring-timer, drifting-timer, cron, manual-scheduler."""

import json
import time
from datetime import datetime, UTC

import pytest
from croniter import croniter

from cocaine.drivers.cron import due
from support import APP_WAIT_FOR_FILE, Subscriber, endpoint, manifest, python_app, task_topics, wait_for

APP = APP_WAIT_FOR_FILE + '''
import json, os, time

GO = os.path.join(os.path.dirname(__file__), "go")

def waits(request):
    wait_for_file(GO)
    return "tick %d" % request.meta["tick"]

def timed(request):
    start = time.time()
    time.sleep(0.05)  # the job's own work, so that jobs would overlap if the timer let them
    return json.dumps([start, time.time()])

def fails(request):
    raise RuntimeError("nope")

def probe(request):
    return b"probe"

def tick(request):
    return json.dumps(request.meta)

def manual(request):
    run = request.meta["run"]
    if run == 1:
        wait_for_file(GO)  # the test's subscription is in place
        return "0.05"
    if run == 2:
        return json.dumps({"at": time.time() + 0.05})
    if run == 3:
        return "soon"
    if run == 4:
        raise RuntimeError("failing run")
    return json.dumps({"delay": 3600})
'''


def start(daemon, tmp_path, tasks, **engine):
    """Create an app with these tasks; return a subscriber to its tasks' results and errors."""
    pubsub = endpoint()
    subscriber = Subscriber(daemon.context, pubsub, *task_topics(tasks))
    daemon.create("app", dict(manifest(python_app(tmp_path, APP), tasks, **engine), pubsub={"endpoint": pubsub}))
    return subscriber


def task_info(daemon, task):
    return daemon.info("app")["tasks"][task]


def test_recurring_timer_overlap_policies(daemon, tmp_path):
    sub = start(daemon, tmp_path, {
        "waits": {"type": "recurring-timer", "interval": 30, "overlap": "skip"},
        "probe": {"type": "recurring-timer", "interval": 30},  # default: allow
    }, pool_limit=2)
    try:
        wait_for(lambda: task_info(daemon, "waits")["counters"]["skipped"] >= 3, message="ticks to be skipped")
        # "skip": one job while the first still runs; "allow": every tick made a job meanwhile.
        assert task_info(daemon, "waits")["stats"]["accepted"] == 1
        assert task_info(daemon, "probe")["stats"]["accepted"] >= 3
        # The subscription is live (a probe result arrived) before the waiting job may finish.
        sub.until(lambda topic, meta, payload: topic == "probe result")
        (tmp_path / "go").touch()
        topic, meta, payload = sub.until(lambda topic, meta, payload: topic == "waits result")
        assert payload == [b"tick 1"] and meta["tick"] == 1
        topic, meta, payload = sub.until(lambda topic, meta, payload: topic == "waits result")
        assert meta["tick"] > 3  # the ticks in between were skipped, not queued
    finally:
        sub.close()


def test_drifting_timer_runs_one_job_at_a_time_and_survives_failures(daemon, tmp_path):
    sub = start(daemon, tmp_path, {"timed": {"type": "drifting-timer", "interval": 50},
                                   "fails": {"type": "drifting-timer", "interval": 20}}, pool_limit=2)
    try:
        runs, errors = [], 0
        while len(runs) < 3 or errors < 2:
            topic, meta, payload = sub.next()
            if topic == "timed result":
                runs.append(json.loads(payload[0]))
            elif topic == "fails error":
                assert json.loads(payload[0]) == {"code": 502, "message": "RuntimeError: nope"}
                errors += 1
        for (_, end), (start_, _) in zip(runs, runs[1:]):
            assert start_ - end >= 0.045  # the next tick came an interval after the job ended
    finally:
        sub.close()
    counters = task_info(daemon, "timed")["counters"]
    assert counters["ticks"] >= 3


def test_cron_ticks_on_schedule_with_a_seconds_field(daemon, tmp_path):
    sub = start(daemon, tmp_path, {"tick": {"type": "cron", "schedule": "* * * * * *", "timezone": "Europe/Moscow"}})
    try:
        ticks = [sub.until(lambda topic, meta, payload: topic == "tick result", timeout=5)[1] for _ in range(2)]
    finally:
        sub.close()
    first, second = ticks
    assert first["scheduled"] == int(first["scheduled"]) and first["missed"] == 0
    assert second["scheduled"] == first["scheduled"] + 1 and second["tick"] == first["tick"] + 1
    info = task_info(daemon, "tick")
    assert info["schedule"] == "* * * * * *" and info["catch-up"] == "once"
    assert info["counters"]["next"] > second["scheduled"]


def test_cron_catch_up_counts_the_missed_ticks():
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    schedule = croniter("*/10 * * * * *", now - 35, second_at_beginning=True)
    first = schedule.get_next(float)  # 11:59:30
    assert due(schedule, first, now) == (now, 3, now + 10)  # 11:59:30, :40, :50 missed; 12:00:00 runs
    schedule = croniter("*/10 * * * * *", now - 5, second_at_beginning=True)
    assert due(schedule, schedule.get_next(float), now) == (now, 0, now + 10)  # on time


def test_manual_scheduler_follows_the_answers_and_reports_broken_ones(daemon, tmp_path):
    sub = start(daemon, tmp_path, {"manual": {"type": "manual-scheduler", "retry": 50},
                                   "probe": {"type": "recurring-timer", "interval": 50}})
    try:
        sub.until(lambda topic, meta, payload: topic == "probe result")  # subscribed
        (tmp_path / "go").touch()
        runs = []
        while len(runs) < 5:
            topic, meta, payload = sub.next()
            if topic.startswith("manual"):
                runs.append((meta["run"], topic, payload))
    finally:
        sub.close()
    assert runs[0] == (1, "manual result", [b"0.05"])
    assert runs[1][:2] == (2, "manual result")
    assert runs[2][:2] == (3, "manual error")
    error = json.loads(runs[2][2][0])
    assert error["code"] == 502 and error["message"].startswith("bad answer to manual-scheduler: expected a number")
    assert runs[3] == (4, "manual error", [b'{"code": 502, "message": "RuntimeError: failing run"}'])
    assert runs[4] == (5, "manual result", [b'{"delay": 3600}'])
    counters = task_info(daemon, "manual")["counters"]
    assert (counters["runs"], counters["broken-answers"], counters["failed"]) == (5, 1, 1)
    assert counters["next"] > time.time() + 3500


@pytest.mark.parametrize("task, error", [
    ({"type": "recurring-timer", "interval": 0}, "tasks.t.interval: expected a number > 0, got 0"),
    ({"type": "recurring-timer", "interval": 10, "overlap": "queue"},
     "tasks.t.overlap: expected one of 'allow', 'skip', got 'queue'"),
    ({"type": "drifting-timer"}, "tasks.t.interval: expected a number > 0, it is missing"),
    ({"type": "cron", "schedule": "* * * *"}, "tasks.t.schedule: expected a crontab schedule: 5 fields"),
    ({"type": "cron", "schedule": "61 * * * *"}, "tasks.t.schedule: expected a crontab schedule"),
    ({"type": "cron", "schedule": "* * * * *", "timezone": "Mars/Olympus"},
     "tasks.t.timezone: expected an IANA time zone such as UTC or Europe/Moscow, got 'Mars/Olympus'"),
    ({"type": "cron", "schedule": "@hourly", "catch-up": "all"},
     "tasks.t.catch-up: expected one of 'once', 'skip', got 'all'"),
    ({"type": "manual-scheduler", "retry": -1}, "tasks.t.retry: expected a number > 0, got -1"),
    ({"type": "manual-scheduler", "every": 5}, "tasks.t.every: unknown key (known: type, first, retry)"),
])
def test_bad_configuration_is_rejected_naming_the_field(daemon, tmp_path, task, error):
    m = dict(manifest(python_app(tmp_path, APP), {"t": task}), pubsub={"endpoint": endpoint()})
    reply = daemon.request({"version": 2, "action": "create", "apps": {"app": m}})
    assert error in reply["app"]["error"]
