"""The node record: what each node keeps in etcd about itself, and how peers and clients read it.

One record per node, at ``/cocaine/<instance>/nodes/<node>``, under the node's lease, so a node that
dies or freezes drops out when its lease expires. The format is documented in ``docs/cluster.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PREFIX = "/cocaine"
# Load figures a record carries per app; every one a non-negative number.
LOAD_FIGURES = ("queue", "queue-limit", "busy", "workers", "pool-limit", "rps")


class RecordError(ValueError):
    """A node record that cannot be used; the message names the field at fault."""


def instance_prefix(instance: str) -> str:
    return f"{PREFIX}/{instance}/"


def nodes_prefix(instance: str) -> str:
    return f"{PREFIX}/{instance}/nodes/"


def node_key(instance: str, node: str) -> str:
    return nodes_prefix(instance) + node


def storage_key(instance: str, namespace: str, key: str = "") -> str:
    """The etcd key of a storage document (or, with no ``key``, the prefix of its namespace)."""
    return f"{PREFIX}/{instance}/storage/{namespace}/{key}"


@dataclass(frozen=True)
class AppLoad:
    """One app on one node: its engine state, its tasks' client endpoints, and its load."""

    state: str
    tasks: dict[str, dict[str, str]]
    load: dict[str, float]

    @property
    def pressure(self) -> float:
        """How full the node is for this app, 0 when idle: work waiting or running per worker slot.

        Comparable across nodes of different sizes, which raw queue lengths are not.
        """
        capacity = max(self.load.get("pool-limit", 0), self.load.get("workers", 0), 1)
        return (self.load.get("queue", 0) + self.load.get("busy", 0)) / capacity


@dataclass(frozen=True)
class NodeRecord:
    name: str
    address: str
    management: list[str]
    updated: float
    apps: dict[str, AppLoad] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({
            "name": self.name,
            "address": self.address,
            "management": self.management,
            "updated": self.updated,
            "apps": {name: {"state": app.state, "tasks": app.tasks, "load": app.load}
                     for name, app in self.apps.items()},
        }, sort_keys=True).encode()

    def endpoint(self, app: str, task: str) -> str | None:
        """Where a client reaches ``app``'s ``task`` on this node, if the app runs here."""
        found = self.apps.get(app)
        if found is None or found.state != "running" or task not in found.tasks:
            return None
        return found.tasks[task].get("endpoint")


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(f"{where}: expected {names}, got {type(value).__name__}")
    return value


def parse(data: bytes | str, where: str = "record") -> NodeRecord:
    """A record from its JSON. :raises RecordError: naming the field at fault."""
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise RecordError(f"{where}: not JSON: {e}") from None
    _expect(raw, dict, where)
    name = _expect(raw.get("name"), str, f"{where}.name")
    address = _expect(raw.get("address"), str, f"{where}.address")
    management = _expect(raw.get("management", []), list, f"{where}.management")
    for i, endpoint in enumerate(management):
        _expect(endpoint, str, f"{where}.management[{i}]")
    updated = float(_expect(raw.get("updated"), (int, float), f"{where}.updated"))
    apps = {}
    for app, entry in _expect(raw.get("apps", {}), dict, f"{where}.apps").items():
        at = f"{where}.apps.{app}"
        _expect(entry, dict, at)
        state = _expect(entry.get("state"), str, f"{at}.state")
        tasks = _expect(entry.get("tasks", {}), dict, f"{at}.tasks")
        for task, spec in tasks.items():
            _expect(spec, dict, f"{at}.tasks.{task}")
            _expect(spec.get("type"), str, f"{at}.tasks.{task}.type")
            if "endpoint" in spec:
                _expect(spec["endpoint"], str, f"{at}.tasks.{task}.endpoint")
        load = _expect(entry.get("load", {}), dict, f"{at}.load")
        for figure in LOAD_FIGURES:
            value = _expect(load.get(figure, 0), (int, float), f"{at}.load.{figure}")
            if value < 0 or not math.isfinite(value):
                raise RecordError(f"{at}.load.{figure}: expected a non-negative number, got {value}")
        apps[app] = AppLoad(state=state, tasks=tasks,
                            load={figure: float(load.get(figure, 0)) for figure in LOAD_FIGURES})
    return NodeRecord(name=name, address=address, management=list(management), updated=updated, apps=apps)


def serving(records: dict[str, NodeRecord], app: str, task: str) -> dict[str, str]:
    """Node name → endpoint of every node whose ``app`` is running and has ``task``."""
    found = {}
    for name, record in records.items():
        endpoint = record.endpoint(app, task)
        if endpoint:
            found[name] = endpoint
    return found
