"""The native protocol's message types and header codec, shared by ``native-server`` and its client.

Specified in docs/native-protocol.md. Every message is one ZeroMQ message: a msgpack header
``[type, id, ...]``, then data frames (request or response chunks).
"""

from __future__ import annotations

from typing import Any

import msgpack

from cocaine.core.plugin_api import ProtocolError, REQUEST_WINDOW

# client -> server
REQUEST = 1  # [REQUEST, id, options] + body frames: a whole request
OPEN = 2  # [OPEN, id, options] + chunk frames: a streamed request and its first chunks
CANCEL = 5  # [CANCEL, id]: the client gives up on the request
# both ways: request chunks client -> server, response chunks server -> client
CHUNK = 3  # [CHUNK, id] + chunk frames
END = 4  # [END, id] (+ the request's last chunk frames, client -> server)
# server -> client
ERROR = 6  # [ERROR, id, code, message]
# both ways: server -> client, the client may send this many more bytes of request chunks;
# client -> server, on a request opened with the option paced, the client read this many more
# bytes of the response
CREDIT = 7  # [CREDIT, id, bytes]

#: Bytes of request chunks a client may send on a streamed request before any credit.
WINDOW = REQUEST_WINDOW
MAX_ID_LENGTH = 128  # bytes, for string ids

_packer = msgpack.Packer(use_bin_type=True)
pack = _packer.pack


def unpack_header(frame: bytes) -> list:
    """Decode a header frame into ``[type, id, ...]`` or raise ProtocolError saying what is wrong."""
    try:
        header = msgpack.unpackb(frame, raw=False, use_list=True)
    except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise ProtocolError(f"header is not valid msgpack: {e}") from None
    if not isinstance(header, list) or len(header) < 2 or not isinstance(header[0], int):
        raise ProtocolError("header is not a msgpack array [type, id, ...]")
    check_id(header[1])
    return header


def check_id(request_id: Any) -> None:
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str, bytes)):
        raise ProtocolError("request id must be an integer or a string")
    if isinstance(request_id, int) and not 0 <= request_id < 2**64:
        raise ProtocolError("request id must be an integer from 0 to 2**64 - 1")
    if isinstance(request_id, (str, bytes)) and len(request_id) > MAX_ID_LENGTH:
        raise ProtocolError(f"request id must be at most {MAX_ID_LENGTH} bytes long")
