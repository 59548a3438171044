"""``cocained --metrics HOST:PORT``: the node's figures in the Prometheus text format, at ``/metrics``.

Served by ``prometheus_client``'s HTTP server on its own thread. Each scrape asks every engine for a
snapshot of its figures (one short call on the engine's reactor: copies, no formatting) and builds
the metrics on the server's thread. The metrics are listed in docs/monitoring.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cocaine.core.engine.figures import WORKER_STATES, EngineFigures, TaskFigures, read_rss
from cocaine.core.engine.stats import quantile
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


def _tasks(f: EngineFigures, value: Callable[[TaskFigures], float]) -> Iterator[tuple[tuple[str, ...], float]]:
    for name, task in sorted(f.tasks.items()):
        yield (name,), value(task)


def _outcomes(f: EngineFigures) -> Iterator[tuple[tuple[str, ...], float]]:
    for name, task in sorted(f.tasks.items()):
        yield (name, "succeeded"), task.succeeded
        yield (name, "failed"), task.failed_total
        yield (name, "rejected"), task.rejected


def _failed_by_code(f: EngineFigures) -> Iterator[tuple[tuple[str, ...], float]]:
    for name, task in sorted(f.tasks.items()):
        for code, n in sorted(task.failed.items()):
            yield (name, str(code)), n


def _one(value: Callable[[EngineFigures], float]) -> Callable[[EngineFigures], list]:
    return lambda f: [((), value(f))]


#: Every metric of an app but ``cocaine_app_up`` and the latency summary: (type, name, help, labels
#: besides ``app``, the samples of one app's figures as (label values, value)).
METRICS: tuple[tuple[str, str, str, tuple[str, ...], Callable[[EngineFigures], Any]], ...] = (
    ("gauge", "cocaine_app_broken", "1 while none of the app's workers can start.", (),
     _one(lambda f: 1 if f.state == "broken" else 0)),
    ("gauge", "cocaine_app_start_time_seconds", "When the app started, in Unix time.", (),
     _one(lambda f: f.started_at)),
    ("counter", "cocaine_jobs_accepted", "Jobs accepted (queued or sent to a worker).", ("task",),
     lambda f: _tasks(f, lambda t: t.accepted)),
    ("counter", "cocaine_jobs", "Jobs by final outcome: succeeded, failed, rejected (refused at once).",
     ("task", "outcome"), _outcomes),
    ("counter", "cocaine_jobs_failed", "Failed jobs by error code.", ("task", "code"), _failed_by_code),
    ("gauge", "cocaine_jobs_running", "Jobs on workers now.", (), _one(lambda f: f.running)),
    ("gauge", "cocaine_workers", "Workers now, by state: busy (with jobs), idle (ready), starting.", ("state",),
     lambda f: [((state,), getattr(f, state)) for state in WORKER_STATES]),
    ("gauge", "cocaine_workers_limit", "The app's pool-limit.", (), _one(lambda f: f.pool_limit)),
    ("gauge", "cocaine_workers_memory_rss_bytes", "Resident memory of the app's process workers.", (),
     _one(lambda f: sum(filter(None, map(read_rss, f.pids()))))),
    ("counter", "cocaine_workers_spawned", "Workers started.", (), _one(lambda f: f.spawned_total)),
    ("counter", "cocaine_worker_exits", "Workers gone, by reason (docs/pubsub.md).", ("reason",),
     lambda f: [((reason,), n) for reason, n in sorted(f.exits.items())]),
    ("gauge", "cocaine_queue_depth", "Jobs waiting in the queue now.", (), _one(lambda f: f.queue_depth)),
    ("gauge", "cocaine_queue_peak", "The most jobs that waited in the queue at once since the app started.", (),
     _one(lambda f: f.queue_peak)),
    ("gauge", "cocaine_queue_limit", "The app's queue-limit.", (), _one(lambda f: f.queue_limit)),
)


class NodeCollector:
    """A ``prometheus_client`` collector of every app the node runs, made from each engine's
    figures (:class:`~cocaine.core.engine.figures.EngineFigures`) by the table :data:`METRICS`."""

    def __init__(self, node: Node, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout

    def describe(self):
        return []  # collected on demand only: no describe-time scrape at registration

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
        from prometheus_client.samples import Sample

        kinds = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}
        up = GaugeMetricFamily("cocaine_app_up", "1 while the app runs (broken or not), 0 if it failed to start.",
                               labels=["app"])
        latency = SummaryMetricFamily(
            "cocaine_job_latency_seconds", "Time from a job's acceptance to its final answer; quantiles over "
            "the task's last 1024 jobs.", labels=["app", "task"])
        families = [kinds[kind](name, doc, labels=["app", *labels]) for kind, name, doc, labels, _ in METRICS]

        for app in sorted(self.node.failed):
            up.add_metric([app], 0)
        for app, engine in sorted(self.node.engines.items()):
            try:
                figures = engine.figures(self.timeout)
            except Exception as e:  # noqa: BLE001 - one busy or stopping app must not fail the scrape
                log.debug("app %s: left out of the metrics: %r", app, e)
                continue
            if figures is None:
                continue
            up.add_metric([app], 1)
            for family, (*_, samples) in zip(families, METRICS):
                for labels, value in samples(figures):
                    family.add_metric([app, *labels], value)
            for task, stats in sorted(figures.tasks.items()):
                latency.add_metric([app, task], stats.succeeded + stats.failed_total, stats.latency_sum)
                ordered = sorted(stats.latencies)
                for q in QUANTILES:
                    value = quantile(ordered, q)
                    latency.samples.append(Sample(latency.name, {"app": app, "task": task, "quantile": str(q)},
                                                  float("nan") if value is None else value))
        yield from (up, *families, latency)


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
