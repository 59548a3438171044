"""Everything cocaine-admin prints: the daemon's replies, human-readable or as JSON, and errors."""

from __future__ import annotations

import json
import sys
from typing import Any

PROG = "cocaine-admin"

# What create/reload/delete did, for the first line of each app in human output.
DONE = {"create": "created", "reload": "reloaded", "delete": "deleted"}


class Output:
    """Prints to stdout in one mode: ``json`` (the daemon's reply as is) or human-readable."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode

    def reply(self, action: str, reply: dict[str, Any]) -> None:
        """Print a reply. A top-level error is not printed here in human mode: it goes to stderr."""
        if self.json_mode:
            print(json.dumps(reply, indent=2))
            return
        if request_error(reply) is not None:
            return
        if action == "info":
            lines = format_info(reply)
        elif action.startswith("user-"):
            lines = format_users(action, reply)
        else:
            lines = format_apps(action, reply)
        if lines:
            print("\n".join(lines))

    @staticmethod
    def error(message: str) -> None:
        """One line on stderr, whatever the message held."""
        print(f"{PROG}: {' '.join(str(message).split())}", file=sys.stderr)


# -- reading replies ------------------------------------------------------------------------------
def request_error(reply: dict[str, Any]) -> str | None:
    """The daemon's error for the whole request, if any.

    A per-app reply is an object, so an app named "error" is not mistaken for one.
    """
    error = reply.get("error")
    return error if isinstance(error, str) else None


def app_errors(action: str, reply: dict[str, Any]) -> list[tuple[str, str]]:
    """``(app, message)`` for every app the action failed for.

    In ``info`` an app that failed to start is a state ("failed", with its reason), not an error
    of the request; only an entry without a state (e.g. no such app) is.
    """
    apps = reply.get("apps", {}) if action == "info" else reply
    if not isinstance(apps, dict):
        return []
    return [(name, str(entry["error"])) for name, entry in apps.items()
            if isinstance(entry, dict) and "error" in entry and "state" not in entry]


# -- human-readable -------------------------------------------------------------------------------
def format_apps(action: str, reply: dict[str, Any]) -> list[str]:
    lines = []
    for name, entry in reply.items():
        if not isinstance(entry, dict) or "error" in entry:
            continue  # reported on stderr
        if action == "delete":
            lines.append(f"{name}: {DONE[action]}")
        else:
            lines.extend(format_app(name, entry, DONE.get(action)))
    return lines


def format_info(reply: dict[str, Any]) -> list[str]:
    lines = []
    node = reply.get("node")
    if isinstance(node, dict):
        lines.append(format_node(node))
        security = node.get("security")
        if isinstance(security, dict) and security_in_use(security):
            lines.append(format_security(security))
    apps = reply.get("apps")
    if isinstance(apps, dict):
        for name, entry in apps.items():
            if isinstance(entry, dict) and not ("error" in entry and "state" not in entry):
                lines.extend(format_app(name, entry))
    return lines


def format_node(node: dict[str, Any]) -> str:
    parts = [f"node {node.get('hostname', '?')}", f"cocaine {node.get('version', '?')}"]
    if "instance" in node:
        parts.append(f"instance {node['instance']}")
    if "pid" in node:
        parts.append(f"pid {node['pid']}")
    if isinstance(node.get("uptime"), (int, float)):
        parts.append(f"up {duration(node['uptime'])}")
    if "apps" in node:
        parts.append(plural(node["apps"], "app"))
    return ", ".join(parts)


def security_in_use(security: dict[str, Any]) -> bool:
    """Whether the security line says anything: not for an open daemon nobody has attacked."""
    refused = security.get("refused") or {}
    return (security.get("signatures") == "required" or bool(security.get("users"))
            or any(refused.values()) or bool((security.get("transport") or {}).get("curve")))


def format_security(security: dict[str, Any]) -> str:
    """One line: signatures, users, refusals by reason, transport."""
    parts = [f"signatures {security.get('signatures', '?')}"]
    if isinstance(security.get("users"), int):
        parts.append(plural(security["users"], "user"))
    refused = {k: v for k, v in (security.get("refused") or {}).items() if isinstance(v, int) and v}
    detail = f" ({', '.join(f'{n} {reason}' for reason, n in refused.items())})" if refused else ""
    parts.append(f"{sum(refused.values())} refused{detail}")
    transport = security.get("transport") or {}
    curve = transport.get("curve")
    if isinstance(curve, dict):
        parts.append(f"CURVE on ({sum((curve.get('refused') or {}).values())} keys refused)")
    return "  security: " + ", ".join(parts)


def format_users(action: str, reply: dict[str, Any]) -> list[str]:
    if action == "user-list":
        users = reply.get("users")
        if not isinstance(users, dict):
            return []
        rows = [(f"{name}", "(unreadable)", str(entry.get("error", "")), "") if "error" in entry else
                (name, str(entry.get("key-type", "?")), str(entry.get("fingerprint", "?")),
                 "may call " + ", ".join(entry.get("permissions") or []))
                for name, entry in sorted(users.items()) if isinstance(entry, dict)]
        return table(rows)
    lines = []
    for name, entry in reply.items():
        if not isinstance(entry, dict) or "error" in entry:
            continue  # reported on stderr
        if entry.get("removed"):
            lines.append(f"{name}: removed")
        else:
            lines.append(f"{name}: added, {entry.get('key-type', '?')} {entry.get('fingerprint', '?')}, "
                         f"may call {', '.join(entry.get('permissions') or [])}")
    return lines


def format_app(name: str, info: dict[str, Any], done: str | None = None) -> list[str]:
    """A few lines per app: state, then pool/queue/jobs, then one line per task."""
    state = str(info.get("state", "running" if info.get("running") else "unknown"))
    head = f"{name}: {done + ', ' if done else ''}{state}"
    reason = info.get("broken-reason") if state == "broken" else info.get("error")
    if reason:
        head += f" ({reason})"
    if isinstance(info.get("uptime"), (int, float)):
        head += f", up {duration(info['uptime'])}"
    lines = [head]
    if not info.get("running"):
        return lines  # a stopped or failed app has no statistics

    pool, queue, jobs = info.get("pool", {}), info.get("queue", {}), info.get("jobs", {})
    limit = info.get("engine", {}).get("pool-limit", "?")
    lines.append(f"  workers {pool.get('total', 0)}/{limit} ({pool.get('busy', 0)} busy)"
                 f"  queue {queue.get('depth', 0)}/{queue.get('limit', '?')}"
                 f"  jobs {counts(jobs)}")
    tasks = info.get("tasks", {})
    rows = [(f"  task {task}", str(detail.get("type", "?")), describe_driver(detail),
             counts(detail.get("stats", {})), latency(detail.get("stats", {})))
            for task, detail in sorted(tasks.items())]
    lines.extend(table(rows))
    return lines


def describe_driver(detail: dict[str, Any]) -> str:
    """What a task listens to: the endpoint, the interval, or the driver's own keys."""
    parts = []
    for key, value in detail.items():
        if key in ("type", "stats", "counters"):  # counters: the driver's own figures, in --json
            continue
        if key == "endpoint":
            parts.append(str(value))
        elif key == "interval" and isinstance(value, (int, float)):
            parts.append(f"every {value:g} ms")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def counts(stats: dict[str, Any]) -> str:
    return ", ".join(f"{stats.get(key, 0)} {key}" for key in ("accepted", "succeeded", "failed", "rejected"))


def latency(stats: dict[str, Any]) -> str:
    ms = stats.get("latency-ms") or {}
    if ms.get("p50") is None:
        return ""
    return f"p50 {milliseconds(ms['p50'])}, p99 {milliseconds(ms.get('p99'))}"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows with each column padded to its widest cell; empty trailing cells add no spaces."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def milliseconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.3g} ms"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
