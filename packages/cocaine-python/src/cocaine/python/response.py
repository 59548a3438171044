"""What a Python handler returns to set its response's status and headers (docs/python.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class Response:
    """A response with metadata: ``return Response(body, status=201, headers={"Content-Type": "text/plain"})``.

    ``body`` is anything a handler may return (bytes, str, None, an iterable or async iterable of
    chunks). ``headers`` is a mapping or an iterable of ``(name, value)`` pairs (repeat a name with
    pairs). Drivers that have no use for metadata (all but ``http-server``) send the body alone.
    """

    __slots__ = ("body", "status", "headers")

    def __init__(self, body: Any = None, status: int = 200,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self.body = body
        self.status = status
        self.headers = headers

    def meta(self) -> dict[str, Any]:
        """The ``meta`` message's map (docs/protocol.md): status first, then the header pairs in order."""
        headers = self.headers or ()
        if isinstance(headers, Mapping):
            headers = headers.items()
        return {"status": self.status, "headers": [[str(name), str(value)] for name, value in headers]}

    def __repr__(self) -> str:
        return f"Response(status={self.status}, headers={self.headers!r})"
