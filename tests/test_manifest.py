"""Manifest validation: each mistake is named by app and field, with what was expected."""

import pytest

from cocaine.core.errors import ConfigError
from cocaine.core.manifest import parse_manifest
from cocaine.core.plugins import Registry
from support import endpoint, free_port, manifest, python_app


@pytest.fixture(scope="module")
def registry():
    return Registry.load()


@pytest.fixture
def app(tmp_path):
    return python_app(tmp_path, "def echo(request):\n    return request.body\n")


def server(**extra):
    return {"echo": {"type": "zeromq-server", "endpoint": "tcp://127.0.0.1:9100", **extra}}


def test_defaults(registry, app):
    parsed = parse_manifest("a", manifest(app, server()), registry)
    assert parsed.engine.backend == "process"
    engine = parsed.engine
    assert (engine.pool_limit, engine.pool_min, engine.queue_limit, engine.concurrency) == (10, 0, 100, 32)
    assert engine.grow_threshold == 1
    assert (engine.heartbeat_timeout, engine.startup_timeout, engine.idle_timeout) == (30.0, 20.0, 60.0)
    assert engine.request_timeout is None
    assert parsed.pubsub is None and parsed.version == 1


def test_the_seed_example_validates(registry, app):
    seed = {
        "type": "python", "args": f"local://{app}", "version": 1,
        "engine": {"backend": "process", "heartbeat-timeout": 60, "pool-limit": 20, "queue-limit": 5},
        "pubsub": {"endpoint": "tcp://lo:9200"},
        "tasks": {"aggregate": {"interval": 60000, "type": "recurring-timer"},
                  "event": {"endpoint": "tcp://lo:9100", "type": "zeromq-server"}},
    }
    parsed = parse_manifest("my-app", seed, registry)
    assert parsed.engine.pool_limit == 20 and parsed.engine.heartbeat_timeout == 60
    assert parsed.tasks["aggregate"].config["interval"] == 60000


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("type"), "manifest.type: expected a non-empty string, it is missing"),
    (lambda m: m.update(type="cobol"), "type: unknown language 'cobol' (known: cpp, js, perl, python)"),
    (lambda m: m.update(args="relative.py"), "args: expected an absolute path or local:///absolute/path"),
    (lambda m: m.update(args=None), "args: expected an absolute path or local:///absolute/path to an existing file, it is missing"),
    (lambda m: m.update(args="/no/such/file.py"), "(no such file), got '/no/such/file.py'"),
    (lambda m: m.update(version=[1]), "version: expected an integer or a string, got [1]"),
    (lambda m: m.update(colour="red"), "manifest.colour: unknown key (known: type, args, version, engine, pubsub, tasks)"),
    (lambda m: m.update(engine=[]), "engine: expected an object, got []"),
    (lambda m: m["engine"].update(backend="fiber"), "engine.backend: unknown backend 'fiber' (known: process, thread)"),
    (lambda m: m["engine"].update({"pool-limit": 0}), "engine.pool-limit: expected an integer from 1 to 1024, got 0"),
    (lambda m: m["engine"].update({"pool-limit": "10"}), "engine.pool-limit: expected an integer from 1 to 1024, got '10'"),
    (lambda m: m["engine"].update({"pool-limit": True}), "engine.pool-limit: expected an integer from 1 to 1024, got True"),
    (lambda m: m["engine"].update({"queue-limit": -5}), "engine.queue-limit: expected an integer >= 1, got -5"),
    (lambda m: m["engine"].update({"heartbeat-timeout": 0}), "engine.heartbeat-timeout: expected a number > 0, got 0"),
    (lambda m: m["engine"].update({"pool_limit": 3}), "engine.pool_limit: unknown key (known: backend, pool-limit"),
    (lambda m: m["engine"].update({"pool-limit": 2, "pool-min": 3}), "engine.pool-min: expected an integer from 0 to 2, got 3"),
    (lambda m: m["engine"].update({"grow-threshold": 0}), "engine.grow-threshold: expected an integer >= 1, got 0"),
    (lambda m: m["engine"].update({"startup-timeout": -1}), "engine.startup-timeout: expected a number > 0, got -1"),
    (lambda m: m["engine"].update({"idle-timeout": "1m"}), "engine.idle-timeout: expected a number > 0, got '1m'"),
    (lambda m: m["engine"].update({"request-timeout": 0}), "engine.request-timeout: expected a number > 0, got 0"),
    (lambda m: m["engine"].update({"concurrency": 0}), "engine.concurrency: expected an integer from 1 to 1024, got 0"),
    (lambda m: m.update(pubsub="tcp://lo:9200"), "pubsub: expected an object like"),
    (lambda m: m.update(pubsub={"endpoint": "lo:9200"}), "pubsub.endpoint: expected a ZeroMQ endpoint"),
    (lambda m: m.update(tasks={}), "tasks: expected a non-empty object mapping task names"),
    (lambda m: m.pop("tasks"), "tasks: expected a non-empty object mapping task names to {\"type\": driver, ...}, it is missing"),
    (lambda m: m.update(tasks={"echo": "zeromq-server"}), "tasks.echo: expected an object like"),
    (lambda m: m.update(tasks={"bad name": {"type": "zeromq-server"}}), "tasks.bad name: expected a task name"),
    (lambda m: m.update(tasks={"e": {}}), "tasks.e.type: expected a non-empty string, it is missing"),
    (lambda m: m.update(tasks={"e": {"type": "zmq"}}), "tasks.e.type: unknown driver 'zmq' (known: cron, drifting-timer, filesystem-monitor, http-server, manual-scheduler, native-server, raw-socket-server, recurring-timer, zeromq-server, zeromq-sink, zeromq-subscriber)"),
    (lambda m: m.update(tasks=server(endpoint="tcp://127.0.0.1:99999")), "tasks.echo.endpoint: expected a ZeroMQ endpoint such as tcp://127.0.0.1:9100, tcp://lo:9100 or ipc:///path with a port from 1 to 65535"),
    (lambda m: m.update(tasks=server(endpoint="udp://x:1")), "tasks.echo.endpoint: expected a ZeroMQ endpoint"),
    (lambda m: m.update(tasks=server(endpoint="tcp://nohost")), "tasks.echo.endpoint: expected a ZeroMQ endpoint"),
    (lambda m: m.update(tasks=server(backlog=3)), "tasks.echo.backlog: unknown key (known: type, endpoint, replies, idle-timeout)"),
    (lambda m: m.update(tasks={"t": {"type": "recurring-timer", "interval": -1}}), "tasks.t.interval: expected a number > 0, got -1"),
    (lambda m: m.update(tasks={"t": {"type": "recurring-timer"}}), "tasks.t.interval: expected a number > 0, it is missing"),
    (lambda m: m.update(tasks={"t": {"type": "recurring-timer", "interval": "1s"}}), "tasks.t.interval: expected a number > 0, got '1s'"),
    (lambda m: m.update(tasks={"t": {"type": "recurring-timer", "interval": 5}}), "pubsub.endpoint: expected an endpoint, since tasks t publish their results"),
])
def test_mistakes_are_named(registry, app, change, message):
    m = manifest(app, server())
    change(m)
    with pytest.raises(ConfigError) as caught:
        parse_manifest("my-app", m, registry)
    assert str(caught.value).startswith("app 'my-app': ")
    assert message in str(caught.value)


def test_bad_app_names(registry, app):
    for name in ("", ".hidden", "a/b", "-x", "x" * 200):
        with pytest.raises(ConfigError, match="app name: invalid name"):
            parse_manifest(name, manifest(app, server()), registry)


def test_an_interface_name_endpoint_serves(daemon, app):
    address = f"tcp://lo:{free_port()}"
    daemon.create("lo", manifest(app, {"echo": {"type": "zeromq-server", "endpoint": address}}))
    assert daemon.client(address.replace("lo", "127.0.0.1")).call(b"lo") == [b"ok", b"lo"]
    assert endpoint()  # the helper still hands out distinct ports after an explicit one
