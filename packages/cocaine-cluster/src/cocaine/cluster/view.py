"""What ``info`` shows of the cluster: its nodes (name, address, up, load) and which apps run where."""

from __future__ import annotations

import time
from typing import Any

from cocaine.cluster import records


def cluster_view(storage) -> dict[str, Any]:
    nodes, apps = {}, {}
    for name, (_, data) in sorted(storage.nodes().items()):
        try:
            record = records.parse(data, f"node {name}")
        except records.RecordError as e:
            nodes[name] = {"up": False, "error": str(e)}
            continue
        nodes[name] = {
            "address": record.address,
            "management": record.management,
            "up": True,  # its key exists: its lease is alive (as far as this view knows)
            "updated": record.updated,
            "apps": {app: {"state": entry.state, "load": entry.load} for app, entry in record.apps.items()},
        }
        for app, entry in record.apps.items():
            apps.setdefault(app, {})[name] = entry.state
    membership = storage.cluster_node
    view = {
        "store": f"etcd://{','.join(f'{h}:{p}' for h, p in storage.etcd.endpoints)}",
        "node": membership.name if membership is not None else None,
        "stale": not storage.connected,
        "revision": storage.revision,
        "nodes": nodes,
        "apps": apps,
    }
    if not storage.connected:
        view["problem"] = f"cluster storage unavailable: {storage.problem}"
        view["stale-for"] = round(time.time() - storage.since, 3)
    return view
