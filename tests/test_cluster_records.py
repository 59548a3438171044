"""Node records: the format every node writes to etcd and every peer and client reads."""

import json

import pytest

from cocaine.cluster import records


def record(**apps):
    return {"name": "node-a", "address": "10.77.0.2", "management": ["tcp://10.77.0.2:5000"],
            "updated": 1764380000.5, "apps": apps}


def echo(state="running", **load):
    return {"state": state, "tasks": {"echo": {"type": "native-server", "endpoint": "tcp://10.77.0.2:9100"}},
            "load": {"queue": 0, "queue-limit": 100, "busy": 0, "workers": 2, "pool-limit": 4, "rps": 0,
                     **load}}


def test_a_record_round_trips():
    parsed = records.parse(json.dumps(record(echo=echo(busy=3, rps=812.5))))
    assert parsed.endpoint("echo", "echo") == "tcp://10.77.0.2:9100"
    assert parsed.apps["echo"].load["busy"] == 3
    assert records.parse(parsed.to_json()) == parsed


def test_only_running_apps_with_the_task_are_served():
    nodes = {
        "a": records.parse(json.dumps(record(echo=echo()))),
        "b": records.parse(json.dumps(record(echo=echo(state="broken")))),
        "c": records.parse(json.dumps(record())),
    }
    assert records.serving(nodes, "echo", "echo") == {"a": "tcp://10.77.0.2:9100"}
    assert records.serving(nodes, "echo", "other") == {}


def test_pressure_compares_nodes_of_different_sizes():
    small = records.parse(json.dumps(record(echo=echo(queue=2, busy=2, **{"pool-limit": 2}))))
    large = records.parse(json.dumps(record(echo=echo(queue=2, busy=4, **{"pool-limit": 16}))))
    assert small.apps["echo"].pressure == 2.0
    assert large.apps["echo"].pressure == 6 / 16


@pytest.mark.parametrize("broken, message", [
    (b"{", "record: not JSON"),
    (json.dumps({**record(), "name": 5}), "record.name: expected str, got int"),
    (json.dumps({**record(), "updated": True}), "record.updated: expected int or float, got bool"),
    (json.dumps(record(echo={**echo(), "state": None})), "record.apps.echo.state: expected str"),
    (json.dumps(record(echo=echo(queue=-1))), "record.apps.echo.load.queue: expected a non-negative number"),
    (json.dumps(record(echo={**echo(), "tasks": {"echo": {"type": "x", "endpoint": 9}}})),
     "record.apps.echo.tasks.echo.endpoint: expected str, got int"),
])
def test_a_bad_record_names_the_field_at_fault(broken, message):
    with pytest.raises(records.RecordError, match=message.replace(".", r"\.")):
        records.parse(broken)


def test_keys_are_scoped_by_instance():
    assert records.node_key("prod", "node-a") == "/cocaine/prod/nodes/node-a"
    assert records.storage_key("prod", "apps", "echo") == "/cocaine/prod/storage/apps/echo"
    assert records.node_key("prod", "x").startswith(records.nodes_prefix("prod"))
