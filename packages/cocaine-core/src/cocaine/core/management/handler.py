"""Parsing and answering one management request. Never raises: every request gets a reply."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from cocaine.core.daemon.node import Node
from cocaine.core.errors import CocaineError
from cocaine.core.management import ACTIONS, SIGNED_VERSION, UNSIGNED_VERSION, USER_ACTIONS, VERSIONS
from cocaine.core.management.auth import Busy, Guard, Refused
from cocaine.core.management.users import Users, check_user_name

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20  # a manifest is small; larger requests get an error reply
NONCE_CHARS = (8, 128)


class RequestError(Exception):
    pass


def handle(node: Node, frames: list[bytes], guard: Guard, peer: str | None = None) -> dict[str, Any]:
    try:
        request = parse(frames)
        guard.admit(request, frames, peer)
        return dispatch(node, request, guard)
    except (RequestError, Refused, Busy) as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - no request may take the daemon down
        log.exception("management request failed")
        return {"error": f"internal error: {type(e).__name__}: {e}"}


def parse(frames: list[bytes]) -> dict[str, Any]:
    if not frames:
        raise RequestError("empty message: expected one JSON frame")
    size = len(frames[0])
    if size > MAX_REQUEST_BYTES:
        raise RequestError(f"request is {size} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        request = json.loads(frames[0])
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RequestError(f"request is not valid JSON: {e}") from None
    if not isinstance(request, dict):
        raise RequestError(f"request must be a JSON object, got {type(request).__name__}")
    version = request.get("version")
    if type(version) is not int or version not in VERSIONS:
        raise RequestError(f"version: expected {UNSIGNED_VERSION} (or {SIGNED_VERSION} for signed requests), "
                           f"got {version!r}")
    if version == UNSIGNED_VERSION and len(frames) > 1:
        raise RequestError(f"version {UNSIGNED_VERSION} requests are one frame, got {len(frames)}")
    if version == SIGNED_VERSION:
        parse_signed_fields(request, frames)
    action = request.get("action")
    if action not in ACTIONS:
        raise RequestError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    apps = request.get("apps")
    users = request.get("users")
    if action == "create":
        if not isinstance(apps, dict) or not apps:
            raise RequestError('apps: expected a non-empty object {"name": manifest, ...} for create')
    elif action == "user-add":
        if not isinstance(users, dict) or not users:
            raise RequestError('users: expected a non-empty object {"name": {"public-key": PEM, ...}} for user-add')
    elif action == "user-remove":
        if not _names(users):
            raise RequestError(f"users: expected a non-empty list of user names for user-remove, got {users!r}")
    elif action in ("delete", "reload") or (action == "info" and apps is not None):
        if not _names(apps):
            raise RequestError(f"apps: expected a non-empty list of app names for {action}, got {apps!r}")
    return request


def parse_signed_fields(request: dict[str, Any], frames: list[bytes]) -> None:
    """The fields a version 3 request adds: ``username``, ``timestamp`` and ``nonce``."""
    if len(frames) > 2:
        raise RequestError(f"version 3 requests are two frames (the request and its signature), got {len(frames)}")
    username = request.get("username")
    if not isinstance(username, str):
        raise RequestError(f"username: expected a user name, got {username!r}")
    try:
        check_user_name(username)
    except CocaineError as e:
        raise RequestError(f"username: {e}") from None
    timestamp = request.get("timestamp")
    if type(timestamp) not in (int, float) or not math.isfinite(timestamp):
        raise RequestError(f"timestamp: expected the Unix time of the request, got {timestamp!r}")
    nonce = request.get("nonce")
    low, high = NONCE_CHARS
    if not isinstance(nonce, str) or not low <= len(nonce) <= high or not nonce.isascii() or not nonce.isprintable():
        raise RequestError(f"nonce: expected a unique string of {low} to {high} printable ASCII characters")


def _names(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def dispatch(node: Node, request: dict[str, Any], guard: Guard) -> dict[str, Any]:
    action = request["action"]
    apps = request.get("apps")
    if action == "create":
        return node.create(apps)
    if action == "delete":
        return node.delete(apps)
    if action == "reload":
        return node.reload(apps)
    if action in USER_ACTIONS:
        return dispatch_users(guard, action, request.get("users"))
    reply = node.info(apps)
    reply["node"]["security"] = {**guard.info(), "transport": node.security.info()}
    return reply


def dispatch_users(guard: Guard, action: str, users: Any) -> dict[str, Any]:
    store = guard.users
    if action == "user-list":
        listed = {}
        for name in store.names():
            try:
                listed[name] = store.get(name).summary()
            except CocaineError as e:
                listed[name] = {"error": str(e)}
        return {"users": listed}
    if action == "user-add":
        return {name: _per_user(_add_user, store, name, document) for name, document in users.items()}
    return {name: _per_user(_remove_user, store, name) for name in users}


def _add_user(store: Users, name: str, document: Any) -> dict[str, Any]:
    return {"added": True, **store.add(name, document).summary()}


def _remove_user(store: Users, name: str) -> dict[str, Any]:
    store.remove(name)
    return {"removed": True}


def _per_user(action, store: Users, name: str, *args) -> dict[str, Any]:
    try:
        result = action(store, name, *args)
    except CocaineError as e:
        return {"error": str(e)}
    log.info("user %s: %s", name, "added" if "added" in result else "removed")
    return result
