"""Everything cocaine-admin prints: the daemon's replies, human-readable or as JSON, and errors."""

from __future__ import annotations

import base64
import json
import sys
import time
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


def format_nodes(cluster: dict[str, Any]) -> list[str]:
    """``nodes``: one row per node of the cluster, with its apps and their load, as this node sees it."""
    lines = [f"cluster {cluster.get('store', '?')}, seen from {cluster.get('node', '?')}"
             + (f" (STALE: {cluster.get('problem', 'etcd unreachable')})" if cluster.get("stale") else "")]
    rows = [("NODE", "ADDRESS", "UP", "APPS (state, queue, busy/workers, req/s)")]
    for name, node in sorted((cluster.get("nodes") or {}).items()):
        apps = node.get("apps") or {}
        shown = ", ".join(
            f"{app} {entry.get('state', '?')} q{int(entry.get('load', {}).get('queue', 0))} "
            f"{int(entry.get('load', {}).get('busy', 0))}/{int(entry.get('load', {}).get('workers', 0))} "
            f"{rate(entry.get('load', {}).get('rps'))}"
            for app, entry in sorted(apps.items())) or "-"
        rows.append((name, str(node.get("address", "?")), "yes" if node.get("up") else "no", shown))
    return lines + table(rows)


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
    memory = f", {size(pool['memory-rss'])}" if pool.get("memory-rss") else ""
    credit = f"  credit {pool['credit']}" if pool.get("credit") is not None else ""
    if credit and isinstance(pool.get("job-time"), (int, float)):
        credit += f" (jobs of {milliseconds(pool['job-time'] * 1000)})"
    lines.append(f"  workers {pool.get('total', 0)}/{limit} ({pool.get('busy', 0)} busy{memory}){credit}"
                 f"  queue {queue.get('depth', 0)}/{queue.get('limit', '?')} (peak {queue.get('peak', 0)})"
                 f"  jobs {counts(jobs)}")
    tasks = info.get("tasks", {})
    rows = [(f"  task {task}", str(detail.get("type", "?")), describe_driver(detail),
             counts(detail.get("stats", {})), latency(detail.get("stats", {})))
            for task, detail in sorted(tasks.items())]
    lines.extend(table(rows))
    workers = [(f"  worker {w.get('id')}", f"pid {w['pid']}" if w.get("pid") else "thread", str(w.get("state", "?")),
                plural(w.get("jobs", 0), "job"), size(w["memory-rss"]) if w.get("memory-rss") else "",
                f"up {duration(w.get('uptime', 0))}")
               for w in pool.get("workers", [])]
    lines.extend(table(workers))
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
    """``N accepted, N succeeded, N failed (502: n, ...), N rejected``."""
    by_code = stats.get("failed-by-code") or {}
    failed = f"{stats.get('failed', 0)} failed"
    if by_code:
        failed += " (" + ", ".join(f"{code}: {n}" for code, n in by_code.items()) + ")"
    return f"{stats.get('accepted', 0)} accepted, {stats.get('succeeded', 0)} succeeded, {failed}, " \
           f"{stats.get('rejected', 0)} rejected"


def latency(stats: dict[str, Any]) -> str:
    ms = stats.get("latency-ms") or {}
    if ms.get("p50") is None:
        return ""
    return ", ".join(f"{p} {milliseconds(ms.get(p))}" for p in ("p50", "p90", "p99"))


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


# -- tail: pubsub messages ------------------------------------------------------------------------
#: Meta fields every message carries, left out of the human form (tail follows one app).
COMMON_FIELDS = ("node", "app", "timestamp")


def event_json(topic: str, meta: dict[str, Any], payload: list[bytes]) -> str:
    """One JSON line: ``{"topic", "meta", "payload"}``; payload frames as UTF-8 strings, or all of
    them in base64 with ``"payload-encoding": "base64"`` when one is not UTF-8."""
    entry: dict[str, Any] = {"topic": topic, "meta": meta}
    try:
        entry["payload"] = [frame.decode() for frame in payload]
    except UnicodeDecodeError:
        entry["payload"] = [base64.b64encode(frame).decode() for frame in payload]
        entry["payload-encoding"] = "base64"
    return json.dumps(entry, ensure_ascii=False)


def format_event(topic: str, meta: dict[str, Any], payload: list[bytes]) -> list[str]:
    """A pubsub message as lines for a terminal: the time, the topic, what happened."""
    head = f"{clock(meta.get('timestamp'))}  {topic}"
    family, _, event = topic.partition(" ")
    if topic == "@stats":
        return [f"{head}  {format_stats(meta)}"]
    if family == "@log":
        first, *rest = str(meta.get("message", "")).split("\n")
        indent = " " * (len(head) + 2)
        return [f"{head}  {meta.get('worker', '?')} [{meta.get('stream', 'log')}]  {first}",
                *(indent + line for line in rest)]
    if event == "error" and not family.startswith("@") and payload:
        try:
            error = json.loads(payload[0])
            return [f"{head}  {error['code']} {error['message']}"]
        except (ValueError, KeyError, TypeError):
            pass
    details = "  ".join(f"{key}={value}" for key, value in meta.items()
                        if key not in COMMON_FIELDS and value is not None)
    text = payload_text(payload)
    return ["  ".join(part for part in (head, details, text) if part)]


def format_stats(stats: dict[str, Any]) -> str:
    pool, queue = stats.get("pool", {}), stats.get("queue", {})
    parts = [f"workers {pool.get('total', 0)}/{pool.get('limit', '?')} ({pool.get('busy', 0)} busy)",
             f"queue {queue.get('depth', 0)}/{queue.get('limit', '?')} (peak {queue.get('peak', 0)})"]
    if pool.get("memory-rss"):
        parts.append(size(pool["memory-rss"]))
    for task, figures in sorted(stats.get("tasks", {}).items()):
        if not (figures.get("accepted") or figures.get("failed") or figures.get("rejected")):
            continue
        ms = figures.get("latency-ms") or {}
        parts.append(f"{task}: {figures.get('throughput', 0):g}/s, {figures.get('succeeded', 0)} ok, "
                     f"{figures.get('failed', 0)} failed, {figures.get('rejected', 0)} rejected, "
                     f"p50 {milliseconds(ms.get('p50'))}, p99 {milliseconds(ms.get('p99'))}")
    return "  ".join(parts)


def payload_text(payload: list[bytes]) -> str:
    data = b"".join(payload)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    return text if text.isprintable() else repr(text)


def clock(timestamp: Any) -> str:
    if not isinstance(timestamp, (int, float)):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(timestamp)) + f".{int(timestamp * 1000) % 1000:03d}"


def size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"  # unreachable


# -- call: the response -------------------------------------------------------------------------
class Response:
    """``call``'s response on stdout, chunk by chunk as it arrives, unchanged (it may be binary).
    On a terminal, :meth:`end` finishes the last line, so that the shell's prompt (or an error)
    starts a line of its own; piped or redirected, the bytes are exactly the app's."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer
        self.terminal = sys.stdout.isatty()
        self.last = b""

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.out.flush()
        if chunk:
            self.last = chunk[-1:]

    def end(self) -> None:
        if self.terminal and self.last not in (b"", b"\n"):
            self.out.write(b"\n")
            self.out.flush()


# -- top: the live view -------------------------------------------------------------------------
SPARKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int) -> str:
    """The last ``width`` values as bars scaled to their maximum."""
    values = values[-width:]
    top = max(values, default=0)
    if top <= 0:
        return (SPARKS[1] * len(values)).rjust(width)
    return "".join(SPARKS[max(1, round(v / top * (len(SPARKS) - 1)))] if v > 0 else SPARKS[1]
                   for v in values).rjust(width)


def rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def top_view(node: dict[str, Any], rows: list, error: str | None, endpoint: str):
    """The screen of ``top``: a header line and one table row per app and per task (a rich renderable)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(format_node(node) if node else f"node at {endpoint}", style="bold")
    head.append(f"   {time.strftime('%H:%M:%S')}   q: quit", style="dim")
    table = Table(box=None, pad_edge=False, header_style="bold reverse", expand=False)
    for title, justify in (("APP / TASK", "left"), ("STATE", "left"), ("WORKERS", "right"), ("QUEUE", "right"),
                           ("REQ/S", "right"), ("HISTORY", "left"), ("P50", "right"), ("P99", "right"),
                           ("ERRORS", "right"), ("MEMORY", "right")):
        table.add_column(title, justify=justify, no_wrap=True)
    for row in rows:
        errors = Text(str(row.failed))
        if row.failing:
            errors.append(f" +{rate(row.failing)}/s", style="bold red")
        state_style = {"running": "green", "broken": "bold red", "failed": "bold red"}.get(row.state, "")
        table.add_row(
            Text(f"  {row.task}" if row.task else row.app, style="" if row.task else "bold"),
            Text(row.state, style=state_style if not row.task else "dim"),
            row.workers, row.queue, rate(row.rate), Text(sparkline(row.history, 20), style="cyan"),
            milliseconds(row.p50) if row.task else "", milliseconds(row.p99) if row.task else "",
            errors, size(row.memory) if row.memory else "")
    parts = [head, table if rows else Text("no apps", style="dim")]
    if error:
        parts.append(Text(f"{PROG}: {error}", style="bold red"))
    return Group(*parts)
