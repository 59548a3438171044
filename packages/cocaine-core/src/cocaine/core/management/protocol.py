"""Parsing and answering one management request. Never raises: every request gets a reply."""

from __future__ import annotations

import json
import logging
from typing import Any

from cocaine.core.daemon.node import Node

log = logging.getLogger(__name__)

VERSION = 2
MAX_REQUEST_BYTES = 1 << 20  # a manifest is small; larger requests get an error reply
ACTIONS = ("create", "delete", "reload", "info")


class RequestError(Exception):
    pass


def handle(node: Node, frames: list[bytes]) -> dict[str, Any]:
    try:
        request = parse(frames)
        return dispatch(node, request)
    except RequestError as e:
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
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request is not valid JSON: {e}") from None
    if not isinstance(request, dict):
        raise RequestError(f"request must be a JSON object, got {type(request).__name__}")
    version = request.get("version")
    if version == 3:
        raise RequestError("version 3 (signed requests) is not enabled on this daemon; use version 2")
    if version != VERSION:
        raise RequestError(f"version: expected {VERSION}, got {version!r}")
    if len(frames) > 1:
        raise RequestError(f"version 2 requests are one frame, got {len(frames)}")
    action = request.get("action")
    if action not in ACTIONS:
        raise RequestError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    apps = request.get("apps")
    if action == "create":
        if not isinstance(apps, dict) or not apps:
            raise RequestError('apps: expected a non-empty object {"name": manifest, ...} for create')
    elif action in ("delete", "reload") or apps is not None:
        if not isinstance(apps, list) or not apps or not all(isinstance(a, str) for a in apps):
            raise RequestError(f"apps: expected a non-empty list of app names for {action}, got {apps!r}")
    return request


def dispatch(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    action = request["action"]
    apps = request.get("apps")
    if action == "create":
        return node.create(apps)
    if action == "delete":
        return node.delete(apps)
    if action == "reload":
        return node.reload(apps)
    return node.info(apps)
