"""A node: the apps this daemon hosts, kept in step with storage."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from typing import Any

import zmq

from cocaine.core import __version__
from cocaine.core.engine.engine import Engine
from cocaine.core.errors import CocaineError, ConfigError, StorageError
from cocaine.core.manifest import check_app_name, parse_manifest
from cocaine.core.plugins import Registry
from cocaine.core.security import SocketSecurity
from cocaine.core.storage import Storage

log = logging.getLogger(__name__)

APPS = "apps"  # the storage namespace of manifests


def gc_info() -> dict[str, Any]:
    """The cyclic collector's figures for this process: objects frozen at start-up, and per
    generation the collections run and the objects they freed (cycles that reference counting
    could not free: on a request path, every one is worth a look)."""
    stats = gc.get_stats()
    return {"frozen": gc.get_freeze_count(), "collections": [s["collections"] for s in stats],
            "collected": [s["collected"] for s in stats]}


class Node:
    def __init__(self, *, registry: Registry, storage: Storage, runtime_dir: str, instance: str,
                 zmq_context: zmq.Context, stop_timeout: float = 10.0,
                 security: SocketSecurity | None = None) -> None:
        self.registry = registry
        self.storage = storage
        self.runtime_dir = runtime_dir
        self.instance = instance
        self.zmq_context = zmq_context
        self.stop_timeout = stop_timeout
        self.security = security or SocketSecurity()  # how apps' network-facing sockets are made
        self.engines: dict[str, Engine] = {}
        self.failed: dict[str, str] = {}  # apps in storage that could not start, with the reason
        self.started_at = time.time()
        # Management requests and a shared storage's changes (another thread) take turns.
        self.lock = threading.RLock()
        #: Decides which node fires a scheduled tick (set by a shared storage; None: this node always).
        self.tick_claims = None
        #: Takes the requests an app with engine.overflow "forward" cannot (set by a shared storage).
        self.forwarder = None
        self.closing = False  # stop_all has begun: a shared storage's changes start nothing any more
        self.stopping: dict[str, Engine] = {}  # the engines stop_all is stopping (a cluster shows them)

    # -- the management actions; each returns {app: info or {"error": ...}} ----------------------
    def create(self, apps: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {name: self._per_app(self._create, name, manifest) for name, manifest in apps.items()}

    def delete(self, names: list[str]) -> dict[str, Any]:
        with self.lock:
            return {name: self._per_app(self._delete, name) for name in names}

    def reload(self, names: list[str]) -> dict[str, Any]:
        with self.lock:
            return {name: self._per_app(self._reload, name, True) for name in names}

    def info(self, names: list[str] | None = None) -> dict[str, Any]:
        with self.lock:
            reply = self._info(names)
        cluster = self.storage.cluster()
        if cluster is not None:
            reply["cluster"] = cluster
        return reply

    def _info(self, names: list[str] | None) -> dict[str, Any]:
        known = sorted(set(self.engines) | set(self.failed))
        apps = {}
        for name in known if names is None else names:
            if name in self.engines:
                apps[name] = self._per_app(lambda n: self.engines[n].info(), name)
            elif name in self.failed:
                apps[name] = {"running": False, "state": "failed", "error": self.failed[name]}
            else:
                apps[name] = {"error": f"no app named {name!r}"}
        return {
            "node": {
                "hostname": socket.gethostname(),
                "instance": self.instance,
                "version": __version__,
                "pid": os.getpid(),
                "uptime": round(time.time() - self.started_at, 3),
                "apps": len(self.engines),
                "storage": {"type": self.storage.name, "location": self.storage.location},
                "gc": gc_info(),
            },
            "apps": apps,
        }

    # -- lifecycle --------------------------------------------------------------------------------
    def load_all(self) -> None:
        """Start every app in storage; one that fails is reported and skipped."""
        with self.lock:
            for name in self._stored_apps():
                if name not in self.engines:
                    self._load(name)

    def reload_all(self) -> None:
        """SIGHUP: start, restart or stop apps so that the node matches storage."""
        with self.lock:
            stored = set(self._stored_apps())
            for name in [*sorted(set(self.engines) - stored), *sorted(stored)]:  # stops free ports first
                self._match_storage(name, name in stored)

    def apply_stored(self, name: str) -> None:
        """Make one app match storage after another node of a shared storage changed it."""
        with self.lock:
            if not self.closing:
                self._match_storage(name, name in self._stored_apps())

    def _match_storage(self, name: str, stored: bool) -> None:
        """Start, reload or stop one app so that it matches storage."""
        if not stored:
            if name in self.engines or name in self.failed:
                self._stop(name)
                self.failed.pop(name, None)
                log.info("app %s: stopped: no longer in storage", name)
        elif name in self.engines:
            result = self._per_app(self._reload, name)
            if "error" in result:
                log.error("app %s: not reloaded: %s", name, result["error"])
        else:
            self._load(name)

    def stop_all(self) -> None:
        """Stop every app at once, so that shutting down takes one stop-timeout, not one per app."""
        with self.lock:
            self.closing = True
            engines, self.engines = self.engines, {}
            self.stopping = engines
        stopping = [(engine, engine.begin_stop(self.stop_timeout)) for engine in engines.values()]
        for engine, stopped in stopping:
            try:
                stopped.result(self.stop_timeout + 15)
            except Exception:
                log.exception("app %s: did not stop cleanly", engine.app)
            engine.join(5.0)

    # -- helpers ----------------------------------------------------------------------------------
    def _per_app(self, action, name, *args) -> dict[str, Any]:
        try:
            return action(name, *args)
        except CocaineError as e:
            return {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - one app's failure must not fail the whole request
            log.exception("app %s: unexpected error", name)
            return {"error": f"internal error: {type(e).__name__}: {e}"}

    def _stored_apps(self) -> list[str]:
        try:
            return self.storage.list(APPS)
        except StorageError as e:
            log.error("cannot list apps in storage: %s", e)
            return []

    def _load(self, name: str) -> None:
        try:
            manifest = parse_manifest(name, self.storage.get(APPS, name), self.registry)
            self._start(manifest)
        except CocaineError as e:
            self.failed[name] = str(e)
            log.error("app %s: not started: %s", name, e)

    def _start(self, manifest) -> dict[str, Any]:
        engine = Engine(manifest, self.registry, zmq_context=self.zmq_context, runtime_dir=self.runtime_dir,
                        security=self.security, tick_claims=self.tick_claims, forwarder=self.forwarder)
        engine.start()
        self.engines[manifest.app] = engine
        self.failed.pop(manifest.app, None)
        return engine.info()

    def _stop(self, name: str) -> None:
        engine = self.engines.pop(name, None)
        if engine is not None:
            engine.stop(self.stop_timeout)

    def _create(self, name: str, raw: Any) -> dict[str, Any]:
        check_app_name(name)
        if name in self.engines:
            raise ConfigError(f"app {name!r} already exists; delete it first or reload it")
        manifest = parse_manifest(name, raw, self.registry)
        info = self._start(manifest)
        try:
            self.storage.create(APPS, name, raw)
        except StorageError:
            self._stop(name)  # never run an app that would be lost on restart
            raise
        log.info("app %s: created", name)
        return info

    def _delete(self, name: str) -> dict[str, Any]:
        check_app_name(name)
        if name not in self.engines and name not in self.failed and name not in self._stored_apps():
            raise ConfigError(f"no app named {name!r}")
        self.storage.remove(APPS, name)  # first: if storage refuses, the app keeps running
        self._stop(name)
        self.failed.pop(name, None)
        log.info("app %s: deleted", name)
        return {"deleted": True}

    def _reload(self, name: str, announce: bool = False) -> dict[str, Any]:
        check_app_name(name)
        if name not in self.engines and name not in self._stored_apps():
            raise ConfigError(f"no app named {name!r}")
        try:
            raw = self.storage.get(APPS, name)
        except StorageError as e:
            raise ConfigError(f"app {name!r} cannot be reloaded: {e}") from None
        # A manifest that fails validation leaves the running engine untouched.
        manifest = parse_manifest(name, raw, self.registry)
        if announce:
            self.storage.announce(APPS, name)  # the other nodes reload too; unreachable: nobody does
        engine = self.engines.get(name)
        if engine is not None and engine.can_reload_in_place(manifest):
            info = engine.reload(manifest)
            log.info("app %s: reloaded in place (generation %s)", name, info["pool"]["generation"])
            return info
        self._stop(name)
        try:
            info = self._start(manifest)
        except CocaineError as e:
            self.failed[name] = str(e)
            raise
        log.info("app %s: reloaded", name)
        return info
