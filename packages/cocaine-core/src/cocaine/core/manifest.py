"""Parsing and validating an app's manifest before anything starts.

Every error is a ConfigError whose message names the app, the field and what was expected, e.g.
``app 'echo': tasks.event.type: unknown driver 'zmq' (known: cron, drifting-timer, ...)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cocaine.core.errors import ConfigError, PluginError, StorageError
from cocaine.core.plugins import Registry
from cocaine.core.storage.files import check_key
from cocaine.core.validation import check_endpoint, field_error, get_int, get_number, get_str, only_keys

TOP_LEVEL_KEYS = ("type", "args", "version", "engine", "pubsub", "tasks")
DEFAULT_STATS_INTERVAL = 5.0
MIN_STATS_INTERVAL = 0.1
_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


#: What a node does with a request it cannot take (queue full, app stopping or broken): answer 503,
#: or, in a cluster, hand it to the least loaded peer running the app (docs/cluster.md).
OVERFLOW_POLICIES = ("refuse", "forward")


@dataclass(frozen=True)
class EngineConfig:
    """The ``engine`` section. Defaults are documented in docs/manifest.md."""

    backend: str = "process"
    pool_limit: int = 10
    pool_min: int = 0  # workers kept warm even when idle
    queue_limit: int = 100
    concurrency: int = 32  # at most, jobs in flight per worker (fewer for slower jobs: pool.HORIZON)
    grow_threshold: int = 1  # queued jobs (beyond every worker's room) that justify one more worker
    heartbeat_timeout: float = 30.0  # seconds a worker may stay silent
    startup_timeout: float = 20.0  # seconds a new worker has to say hello
    idle_timeout: float = 60.0  # seconds an idle worker above pool-min lives on
    request_timeout: float | None = None  # default deadline of a job, from its acceptance
    overflow: str = "refuse"  # or "forward": in a cluster, what this node cannot take goes to a peer
    fork_server: bool = True  # process workers forked from a server that loaded the app once, if the language can

    KEYS = {
        "backend": "backend",
        "pool-limit": "pool_limit",
        "pool-min": "pool_min",
        "queue-limit": "queue_limit",
        "concurrency": "concurrency",
        "grow-threshold": "grow_threshold",
        "heartbeat-timeout": "heartbeat_timeout",
        "startup-timeout": "startup_timeout",
        "idle-timeout": "idle_timeout",
        "request-timeout": "request_timeout",
        "overflow": "overflow",
        "fork-server": "fork_server",
    }

    def to_json(self) -> dict:
        return {key: getattr(self, attr) for key, attr in self.KEYS.items()}


@dataclass(frozen=True)
class TaskConfig:
    name: str
    driver: type
    config: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    app: str
    type: str
    args: str
    version: Any
    engine: EngineConfig
    pubsub: str | None
    tasks: dict[str, TaskConfig]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    #: Seconds between ``@stats`` messages on the pubsub endpoint; 0: none (docs/pubsub.md).
    stats_interval: float = DEFAULT_STATS_INTERVAL


def check_app_name(app) -> str:
    try:
        return check_key(app)
    except StorageError as e:
        raise ConfigError(f"app name: {e}") from None


def parse_manifest(app: str, raw: Any, registry: Registry) -> Manifest:
    check_app_name(app)
    try:
        return _parse(app, raw, registry)
    except (ConfigError, PluginError) as e:
        raise ConfigError(f"app {app!r}: {e}") from None


def _parse(app: str, raw: Any, registry: Registry) -> Manifest:
    if not isinstance(raw, dict):
        raise field_error("manifest", "a JSON object", raw)
    only_keys(raw, TOP_LEVEL_KEYS, "manifest")

    language_name = get_str(raw, "type", "manifest")
    try:
        language = registry.get("language", language_name)
    except PluginError as e:
        raise ConfigError(f"type: {e}") from None
    args = language.validate_args(raw.get("args"), "args")

    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise field_error("version", "an integer or a string", version)

    engine = _parse_engine(raw.get("engine", {}), registry)
    if registry.get("backend", engine.backend).transport == "inproc" and not language.supports_threads:
        raise ConfigError(f"engine.backend: the {language_name} language cannot run workers as threads "
                          f"(use the process backend)")

    pubsub = raw.get("pubsub")
    endpoint = None
    stats_interval = DEFAULT_STATS_INTERVAL
    if pubsub is not None:
        if not isinstance(pubsub, dict):
            raise field_error("pubsub", 'an object like {"endpoint": "tcp://lo:9200"}', pubsub)
        only_keys(pubsub, ("endpoint", "stats-interval"), "pubsub")
        endpoint = check_endpoint(pubsub.get("endpoint"), "pubsub.endpoint")
        stats_interval = _parse_stats_interval(pubsub)

    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        expected = 'a non-empty object mapping task names to {"type": driver, ...}'
        if "tasks" not in raw:
            raise field_error("tasks", expected)
        raise field_error("tasks", expected, tasks_raw)
    tasks = {}
    for name, config in tasks_raw.items():
        where = f"tasks.{name}"
        if not _TASK_NAME.match(name):
            raise field_error(where, "a task name of letters, digits, _ . - starting with a letter or _", name)
        if not isinstance(config, dict):
            raise field_error(where, 'an object like {"type": "zeromq-server", ...}', config)
        driver_name = get_str(config, "type", where)
        try:
            driver = registry.get("driver", driver_name)
        except PluginError as e:
            raise ConfigError(f"{where}.type: {e}") from None
        tasks[name] = TaskConfig(name, driver, driver.validate(dict(config), where))

    if endpoint is None and any(t.driver.publishes for t in tasks.values()):
        publishing = ", ".join(n for n, t in tasks.items() if t.driver.publishes)
        raise field_error("pubsub.endpoint", f"an endpoint, since tasks {publishing} publish their results")

    return Manifest(app, language_name, args, version, engine, endpoint, tasks, raw, stats_interval)


def _parse_stats_interval(pubsub: dict) -> float:
    value = pubsub.get("stats-interval", DEFAULT_STATS_INTERVAL)
    if value == 0 and not isinstance(value, bool):
        return 0.0
    expected = f"0 (no statistics) or a number of seconds >= {MIN_STATS_INTERVAL:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= MIN_STATS_INTERVAL:
        raise field_error("pubsub.stats-interval", expected, value)
    return float(value)


def _parse_engine(raw: Any, registry: Registry) -> EngineConfig:
    where = "engine"
    if not isinstance(raw, dict):
        raise field_error(where, "an object", raw)
    only_keys(raw, tuple(EngineConfig.KEYS), where)
    defaults = EngineConfig()
    backend = get_str(raw, "backend", where, default=defaults.backend)
    try:
        registry.get("backend", backend)
    except PluginError as e:
        raise ConfigError(f"{where}.backend: {e}") from None
    pool_limit = get_int(raw, "pool-limit", where, default=defaults.pool_limit, minimum=1, maximum=1024)
    concurrency = get_int(raw, "concurrency", where, default=defaults.concurrency, minimum=1, maximum=1024)
    request_timeout = raw.get("request-timeout")
    fork_server = raw.get("fork-server", defaults.fork_server)
    if not isinstance(fork_server, bool):
        raise field_error(f"{where}.fork-server", "true or false", fork_server)
    return EngineConfig(
        backend=backend,
        pool_limit=pool_limit,
        pool_min=get_int(raw, "pool-min", where, default=defaults.pool_min, minimum=0, maximum=pool_limit),
        queue_limit=get_int(raw, "queue-limit", where, default=defaults.queue_limit, minimum=1),
        concurrency=concurrency,
        grow_threshold=get_int(raw, "grow-threshold", where, default=defaults.grow_threshold, minimum=1),
        heartbeat_timeout=get_number(raw, "heartbeat-timeout", where, default=defaults.heartbeat_timeout),
        startup_timeout=get_number(raw, "startup-timeout", where, default=defaults.startup_timeout),
        idle_timeout=get_number(raw, "idle-timeout", where, default=defaults.idle_timeout),
        request_timeout=None if request_timeout is None else get_number(raw, "request-timeout", where),
        overflow=get_str(raw, "overflow", where, default=defaults.overflow, choices=OVERFLOW_POLICIES),
        fork_server=fork_server,
    )

