"""``cocaine-admin tail``: follow an app's pubsub stream (topics in docs/pubsub.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import zmq

from cocaine.cli.endpoints import connected
from cocaine.cli.errors import BadReply
from cocaine.cli.keys import CurveClient

Message = tuple[str, dict[str, Any], list[bytes]]


def follow(endpoint: str, topics: list[str], count: int | None = None,
           curve: CurveClient | None = None) -> Iterator[Message]:
    """Subscribe to ``topics`` (prefixes; none: everything) and yield ``(topic, meta, payload)``
    until ``count`` messages, or forever. ``curve``: the keys for a daemon with CURVE."""
    with connected(zmq.SUB, endpoint, curve, subscribe=topics or [""]) as sock:
        seen = 0
        while count is None or seen < count:
            frames = sock.recv_multipart()
            if len(frames) < 2:
                continue  # not one of ours: every message has a topic and a meta frame
            try:
                meta = json.loads(frames[1])
            except (ValueError, UnicodeDecodeError) as e:
                raise BadReply(f"{endpoint} published a meta frame that is not JSON: {e}") from None
            seen += 1
            yield frames[0].decode(errors="replace"), meta, frames[2:]
