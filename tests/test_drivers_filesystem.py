"""``filesystem-monitor`` end to end, with real files: events, coalescing, patterns, a missing path."""

import itertools
import json
import os

import pytest

from support import Subscriber, endpoint, manifest, python_app, wait_for

APP = '''
import json

def spool(request):
    event = request.json()
    assert event == request.meta
    return json.dumps(event)

def fails(request):
    raise RuntimeError("cannot handle " + request.meta["path"])

def probe(request):
    return b"probe"
'''


def start(daemon, tmp_path, tasks):
    pubsub = endpoint()
    subscriber = Subscriber(daemon.context, pubsub)
    daemon.create("app", dict(manifest(python_app(tmp_path, APP), tasks, pool_limit=1), pubsub={"endpoint": pubsub}))
    return subscriber


def events_until(sub, sentinel: str, kind: str | None = None) -> list[tuple[str, str]]:
    """(kind, path) of each spool event published up to and including the one for ``sentinel`` (of
    that ``kind``, if given); events of the probe files that made sure of the subscription are left out."""
    seen = []
    while True:
        topic, meta, payload = sub.next()
        if topic == "spool result" and not os.path.basename(meta["path"]).startswith("probe-"):
            seen.append((meta["kind"], meta["path"]))
            assert json.loads(payload[0]) == {"kind": meta["kind"], "path": meta["path"],
                                              "directory": meta["directory"]}
            if meta["path"] == sentinel and kind in (None, meta["kind"]):
                return seen


def subscribed(sub, folder):
    """Create probe files until one's event is published: the subscription is then in place."""
    names = (folder / f"probe-{i}" for i in itertools.count())
    sub.first(lambda: next(names).touch())


def test_changes_are_published_with_their_kind_and_path(daemon, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    sub = start(daemon, tmp_path, {"spool": {"type": "filesystem-monitor", "path": str(spool), "coalesce": 50}})
    try:
        subscribed(sub, spool)
        target = spool / "a.txt"
        target.write_bytes(b"one")
        assert events_until(sub, str(target))[-1] == ("created", str(target))
        target.write_bytes(b"two")
        assert events_until(sub, str(target))[-1] == ("modified", str(target))
        target.unlink()
        assert events_until(sub, str(target))[-1] == ("deleted", str(target))
    finally:
        sub.close()
    counters = daemon.info("app")["tasks"]["spool"]["counters"]
    assert counters["state"] == "watching" and counters["events"] >= 4


def test_saves_by_rename_are_coalesced(daemon, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    doc = spool / "doc.txt"
    doc.write_text("v1")
    sub = start(daemon, tmp_path, {"spool": {"type": "filesystem-monitor", "path": str(spool)}})
    try:
        subscribed(sub, spool)
        # vim: keep the old file as a backup, write the new one, drop the backup.
        os.rename(doc, spool / "doc.txt~")
        doc.write_text("v2")
        os.unlink(spool / "doc.txt~")
        sentinel = spool / "sentinel-1"
        sentinel.touch()
        assert events_until(sub, str(sentinel)) == [("modified", str(doc)), ("created", str(sentinel))]
        # An atomic save: write a temporary file, rename it over the old one.
        temporary = spool / ".doc.txt.tmp"
        temporary.write_text("v3")
        os.replace(temporary, doc)
        sentinel = spool / "sentinel-2"
        sentinel.touch()
        assert events_until(sub, str(sentinel)) == [("created", str(doc)), ("created", str(sentinel))]
    finally:
        sub.close()
    assert daemon.info("app")["tasks"]["spool"]["counters"]["coalesced"] >= 5


def test_recursive_monitoring_with_patterns(daemon, tmp_path):
    spool = tmp_path / "spool"
    (spool / "deep" / "er").mkdir(parents=True)
    sub = start(daemon, tmp_path, {"spool": {"type": "filesystem-monitor", "path": str(spool), "recursive": True,
                                             "patterns": ["*.log", "probe-*"], "coalesce": 50}})
    try:
        subscribed(sub, spool)
        (spool / "deep" / "skipped.txt").write_text("not matched")
        log = spool / "deep" / "er" / "app.log"
        log.write_text("matched")
        assert events_until(sub, str(log)) == [("created", str(log))]
    finally:
        sub.close()


def test_a_path_that_does_not_exist_yet_is_watched_once_it_appears(daemon, tmp_path):
    later = tmp_path / "later"
    sub = start(daemon, tmp_path, {"spool": {"type": "filesystem-monitor", "path": str(later), "coalesce": 50},
                                   "probe": {"type": "recurring-timer", "interval": 50}})

    def state():
        return daemon.info("app")["tasks"]["spool"]["counters"]["state"]

    try:
        assert state() == "waiting"
        sub.until(lambda topic, meta, payload: topic == "probe result")  # subscribed
        later.mkdir()
        assert events_until(sub, str(later)) == [("created", str(later))]
        assert state() == "watching"
        inside = later / "file"
        inside.touch()
        assert events_until(sub, str(inside)) == [("created", str(inside))]
        inside.unlink()
        later.rmdir()
        wait_for(lambda: state() == "waiting", message="the monitor to notice the folder is gone")
    finally:
        sub.close()


def test_a_failing_handler_publishes_an_error_and_the_monitor_goes_on(daemon, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    sub = start(daemon, tmp_path, {"fails": {"type": "filesystem-monitor", "path": str(spool), "coalesce": 0}})
    try:
        names = (spool / f"f{i}" for i in itertools.count())
        first = sub.first(lambda: next(names).touch())
        second_file = spool / "second"
        second_file.touch()
        second = sub.until(lambda topic, meta, payload: meta["path"] == str(second_file))
    finally:
        sub.close()
    for topic, meta, payload in (first, second):
        assert topic == "fails error"
        assert json.loads(payload[0]) == {"code": 502, "message": f"RuntimeError: cannot handle {meta['path']}"}


def test_a_single_file_is_watched_through_its_folder(daemon, tmp_path):
    target = tmp_path / "watched.conf"
    target.write_text("a")
    sub = start(daemon, tmp_path, {"spool": {"type": "filesystem-monitor", "path": str(target)},
                                   "probe": {"type": "recurring-timer", "interval": 50}})
    try:
        sub.until(lambda topic, meta, payload: topic == "probe result")  # subscribed
        (tmp_path / "other.conf").write_text("not this one")
        temporary = tmp_path / ".watched.conf.swp"
        temporary.write_text("b")
        os.replace(temporary, target)  # a new file replaces the watched one
        assert events_until(sub, str(target)) == [("created", str(target))]
        target.write_text("c")
        assert events_until(sub, str(target)) == [("modified", str(target))]
    finally:
        sub.close()


@pytest.mark.parametrize("keys, error", [
    ({"path": "relative/dir"}, "tasks.t.path: expected an absolute path, got 'relative/dir'"),
    ({}, "tasks.t.path: expected a non-empty string, it is missing"),
    ({"path": "/tmp", "recursive": "yes"}, "tasks.t.recursive: expected true or false, got 'yes'"),
    ({"path": "/tmp", "patterns": []}, "tasks.t.patterns: expected a string or a non-empty list of strings, got []"),
    ({"path": "/tmp", "patterns": ["*.txt", 3]}, "tasks.t.patterns[1]: expected a non-empty string, got 3"),
    ({"path": "/tmp", "coalesce": -1}, "tasks.t.coalesce: expected a number >= 0, got -1"),
])
def test_bad_configuration_is_rejected_naming_the_field(daemon, tmp_path, keys, error):
    m = dict(manifest(python_app(tmp_path, APP), {"t": {"type": "filesystem-monitor", **keys}}),
             pubsub={"endpoint": endpoint()})
    reply = daemon.request({"version": 2, "action": "create", "apps": {"app": m}})
    assert error in reply["app"]["error"]
