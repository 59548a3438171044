"""The request object a Python handler receives."""

from __future__ import annotations

import json
from typing import Any


class Request:
    """One job's input: the body (bytes) and metadata from the driver (see docs/drivers.md)."""

    __slots__ = ("id", "task", "body", "meta")

    def __init__(self, job_id: int, task: str, body: bytes | None, meta: dict[str, Any]) -> None:
        self.id = job_id
        self.task = task
        self.body = body or b""
        self.meta = meta

    def __bytes__(self) -> bytes:
        return self.body

    def read(self) -> bytes:
        return self.body

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding)

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Request(task={self.task!r}, body={len(self.body)} bytes, meta={self.meta!r})"
