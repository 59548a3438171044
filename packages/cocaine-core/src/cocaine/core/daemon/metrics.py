"""``cocained --metrics HOST:PORT``: the node's figures in the Prometheus text format, at ``/metrics``.

Served by ``prometheus_client``'s HTTP server on its own thread. Each scrape asks every engine for a
snapshot of its counters (one short call on the engine's reactor: copies, no formatting) and builds
the metrics on the server's thread. The metrics are listed in docs/monitoring.md.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from cocaine.core.engine.context import quantile
from cocaine.core.engine.monitor import read_rss
from cocaine.core.errors import ConfigError

if TYPE_CHECKING:
    from cocaine.core.daemon.node import Node

log = logging.getLogger(__name__)

#: Seconds a scrape waits for one engine's snapshot before leaving that app out of it.
SNAPSHOT_TIMEOUT = 2.0
QUANTILES = (0.5, 0.9, 0.99)
_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(?P<port>\d{1,5})$")


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (HOST may be ``*`` or empty for every interface, or ``[v6]``) -> (host, port)."""
    match = _ADDRESS.match(value)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"--metrics: expected HOST:PORT such as 127.0.0.1:9300, got {value!r}")
    host = match["host"].strip("[]")
    return ("0.0.0.0" if host in ("", "*") else host), int(match["port"])


class NodeCollector:
    """A ``prometheus_client`` collector of every app the node runs."""

    def __init__(self, node: Node, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout

    def describe(self):
        return []  # collected on demand only: no describe-time scrape at registration

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
        from prometheus_client.samples import Sample

        def counter(name, doc, *labels):
            return CounterMetricFamily(name, doc, labels=["app", *labels])

        def gauge(name, doc, *labels):
            return GaugeMetricFamily(name, doc, labels=["app", *labels])

        up = gauge("cocaine_app_up", "1 while the app runs (broken or not), 0 if it failed to start.")
        broken = gauge("cocaine_app_broken", "1 while none of the app's workers can start.")
        started = gauge("cocaine_app_start_time_seconds", "When the app started, in Unix time.")
        accepted = counter("cocaine_jobs_accepted", "Jobs accepted (queued or sent to a worker).", "task")
        jobs = counter("cocaine_jobs", "Jobs by final outcome: succeeded, failed, rejected (refused at once).",
                       "task", "outcome")
        failed = counter("cocaine_jobs_failed", "Failed jobs by error code.", "task", "code")
        latency = SummaryMetricFamily(
            "cocaine_job_latency_seconds", "Time from a job's acceptance to its final answer; quantiles over "
            "the task's last 1024 jobs.", labels=["app", "task"])
        running = gauge("cocaine_jobs_running", "Jobs on workers now.")
        workers = gauge("cocaine_workers", "Workers now, by state: busy (with jobs), idle, starting.", "state")
        limit = gauge("cocaine_workers_limit", "The app's pool-limit.")
        memory = gauge("cocaine_workers_memory_rss_bytes", "Resident memory of the app's process workers.")
        spawned = counter("cocaine_workers_spawned", "Workers started.")
        exits = counter("cocaine_worker_exits", "Workers gone, by reason (docs/pubsub.md).", "reason")
        depth = gauge("cocaine_queue_depth", "Jobs waiting in the queue now.")
        peak = gauge("cocaine_queue_peak", "The most jobs that waited in the queue at once since the app started.")
        queue_limit = gauge("cocaine_queue_limit", "The app's queue-limit.")

        for app in sorted(self.node.failed):
            up.add_metric([app], 0)
        for app, engine in sorted(self.node.engines.items()):
            try:
                snap = engine.metrics(self.timeout)
            except Exception as e:  # noqa: BLE001 - one busy or stopping app must not fail the scrape
                log.debug("app %s: left out of the metrics: %r", app, e)
                continue
            if snap is None:
                continue
            up.add_metric([app], 1)
            broken.add_metric([app], 1 if snap["state"] == "broken" else 0)
            started.add_metric([app], snap["started-at"])
            for task, stats in sorted(snap["tasks"].items()):
                accepted.add_metric([app, task], stats["accepted"])
                jobs.add_metric([app, task, "succeeded"], stats["succeeded"])
                jobs.add_metric([app, task, "failed"], sum(stats["failed"].values()))
                jobs.add_metric([app, task, "rejected"], stats["rejected"])
                for code, n in sorted(stats["failed"].items()):
                    failed.add_metric([app, task, str(code)], n)
                finished = stats["succeeded"] + sum(stats["failed"].values())
                latency.add_metric([app, task], finished, stats["latency-sum"])
                ordered = sorted(stats["latencies"])
                for q in QUANTILES:
                    value = quantile(ordered, q)
                    latency.samples.append(Sample(latency.name, {"app": app, "task": task, "quantile": str(q)},
                                                  float("nan") if value is None else value))
            pool = snap["pool"]
            for state in ("busy", "idle", "starting"):
                workers.add_metric([app, state], pool[state])
            limit.add_metric([app], pool["limit"])
            memory.add_metric([app], sum(filter(None, map(read_rss, pool["pids"]))))
            spawned.add_metric([app], snap["spawned"])
            for reason, n in sorted(snap["exits"].items()):
                exits.add_metric([app, reason], n)
            running.add_metric([app], snap["running"])
            depth.add_metric([app], snap["queue"]["depth"])
            peak.add_metric([app], snap["queue"]["peak"])
            queue_limit.add_metric([app], snap["queue"]["limit"])
        yield from (up, broken, started, accepted, jobs, failed, latency, running, workers, limit, memory, spawned,
                    exits, depth, peak, queue_limit)


class MetricsServer:
    """The ``/metrics`` endpoint on its own thread; ``close()`` stops it."""

    def __init__(self, node: Node, address: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
        except ImportError as e:  # a broken install: the dependency is declared
            raise ConfigError(f"--metrics needs the prometheus_client package: {e}") from None
        host, port = parse_address(address)
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(node))
        ProcessCollector(registry=self.registry)  # the daemon's own CPU, memory and file descriptors
        try:
            self.server, self.thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"--metrics {address}: cannot listen: {e.strerror or e}") from None
        self.address = address

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
