"""Writing HTTP responses: the status line and headers, the handler's response metadata, and the
error table (docs/http.md) that turns a job's error code into a status."""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus

from cocaine.core.plugin_api import Code

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Framing is the server's business: a handler's own values for these are dropped.
FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade"))
RETRY_AFTER = 1  # seconds a client should wait after a 503

# error code of a job -> (status, short body); everything else becomes 500
ERRORS = {
    int(Code.BAD_REQUEST): 400,
    int(Code.SERVER): 500,
    int(Code.APP): 500,  # the app's handler failed: the message (and traceback) stay in the log
    int(Code.UNAVAILABLE): 503,
    int(Code.TIMEOUT): 504,
}


class BadMeta(ValueError):
    """A handler's response metadata that cannot be sent (says which field)."""


_date = [0, b""]


def date_header() -> bytes:
    """``Date: ...\\r\\n``, formatted once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[0] = now
        _date[1] = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date[1]


def parse_meta(meta) -> tuple[int, bytes]:
    """A handler's ``{"status": int, "headers": [[name, value], ...]}`` -> (status, header lines),
    checked so that nothing a handler sets can break the response's framing."""
    if not isinstance(meta, dict):
        raise BadMeta("response metadata is not a map")
    status = meta.get("status", 200)
    if type(status) is not int or not 200 <= status <= 599:
        raise BadMeta(f"status must be an integer from 200 to 599, not {status!r}")
    headers = meta.get("headers", [])
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(headers, list):
        raise BadMeta("headers must be a list of [name, value] pairs")
    lines = bytearray()
    for pair in headers:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadMeta(f"header {pair!r} is not a [name, value] pair")
        name, value = (_header_bytes(part) for part in pair)
        if not _TOKEN.match(name):
            raise BadMeta(f"header name {pair[0]!r} is not an HTTP token")
        if _BAD_VALUE.search(value):
            raise BadMeta(f"header {pair[0]!r} has a control character in its value")
        if name.lower() not in FRAMING:
            lines += name + b": " + value + b"\r\n"
    return status, bytes(lines)


def _header_bytes(part) -> bytes:
    if isinstance(part, str):
        return part.encode("latin-1", "replace")
    if isinstance(part, bytes):
        return part
    if isinstance(part, int) and not isinstance(part, bool):
        return str(part).encode()
    raise BadMeta(f"header part {part!r} is not a string")


def head(status: int, headers: bytes, framing: bytes, keep_alive: bool, http10: bool) -> bytes:
    """The status line and header block. ``framing`` is the Content-Length or Transfer-Encoding
    line (or nothing); ``headers`` the handler's lines."""
    key = (status, headers, keep_alive, http10)
    parts = _heads.get(key)
    if parts is None:
        parts = _head_parts(*key)
        if len(_heads) < HEAD_CACHE and len(headers) <= HEAD_CACHE_LINES:
            _heads[key] = parts
    return b"".join((parts[0], date_header(), framing, parts[1]))


#: Heads seen most (an app answers with a few statuses and header sets) are built once; a head
#: with per-request values (a cookie, an ETag) is built each time once the cache is full. The
#: cache holds at most HEAD_CACHE heads of at most HEAD_CACHE_LINES bytes of handler headers.
HEAD_CACHE = 256
HEAD_CACHE_LINES = 1024
_heads: dict[tuple, tuple[bytes, bytes]] = {}


def _head_parts(status: int, headers: bytes, keep_alive: bool, http10: bool) -> tuple[bytes, bytes]:
    """The status line, and what follows the Date and framing lines: Connection, the handler's
    headers (with a default Content-Type) and the blank line."""
    connection = b"" if keep_alive != http10 else (b"Connection: keep-alive\r\n" if keep_alive
                                                     else b"Connection: close\r\n")
    if b"content-type:" not in headers.lower():
        headers += b"Content-Type: application/octet-stream\r\n"
    return b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown")), connection + headers + b"\r\n"


def error_response(status: int, keep_alive: bool, http10: bool, is_head: bool = False) -> bytes:
    """A complete error response with a short text body: the reason phrase."""
    body = REASONS.get(status, b"Error") + b"\n"
    extra = b"Retry-After: %d\r\n" % RETRY_AFTER if status == 503 else b""
    return head(status, extra + b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % len(body), keep_alive, http10) + (b"" if is_head else body)
