"""The engine <-> worker protocol (specified in docs/protocol.md).

A ZeroMQ message between the engine (ROUTER) and a worker (DEALER) carries one or more protocol
messages, one per frame, each a msgpack array whose first element is the message type. Batching
several protocol messages into one ZeroMQ message saves a wake-up per message on the hot path.
"""

from __future__ import annotations

import msgpack

from cocaine.core.errors import ProtocolError

VERSION = 1

# worker -> engine
HELLO = 1  # [HELLO, version, pid]
# both ways
HEARTBEAT = 2  # [HEARTBEAT]
# engine -> worker
TERMINATE = 3  # [TERMINATE, reason]
INVOKE = 4  # [INVOKE, job, task, meta, body, closed]
# both ways: request chunks engine -> worker, response chunks worker -> engine
CHUNK = 5  # [CHUNK, job, data]
END = 6  # [END, job]
# worker -> engine: the job failed; engine -> worker: the job was cancelled
ERROR = 7  # [ERROR, job, code, message]
# worker -> engine: a log line from the app
LOG = 8  # [LOG, level, message]
# worker -> engine: the handler consumed this many more bytes of a streamed request (flow control)
CREDIT = 9  # [CREDIT, job, bytes]

NAMES = {
    HELLO: "hello",
    HEARTBEAT: "heartbeat",
    TERMINATE: "terminate",
    INVOKE: "invoke",
    CHUNK: "chunk",
    END: "end",
    ERROR: "error",
    LOG: "log",
    CREDIT: "credit",
}

_packer = msgpack.Packer(use_bin_type=True)
pack = _packer.pack

HEARTBEAT_FRAME = pack([HEARTBEAT])


def unpack(frame) -> list:
    """Decode one frame into a protocol message, or raise ProtocolError saying what is wrong."""
    try:
        message = msgpack.unpackb(frame, raw=False, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"frame is not valid msgpack: {e}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], int):
        raise ProtocolError("frame is not a msgpack array starting with a message type")
    return message


def invoke(job: int, task: str, meta: dict, body: bytes | None, closed: bool) -> bytes:
    return pack([INVOKE, job, task, meta, body, closed])


def chunk(job: int, data: bytes) -> bytes:
    return pack([CHUNK, job, data])


def end(job: int) -> bytes:
    return pack([END, job])


def error(job: int, code: int, message: str) -> bytes:
    return pack([ERROR, job, int(code), message])


def hello(pid: int) -> bytes:
    return pack([HELLO, VERSION, pid])


def terminate(reason: str) -> bytes:
    return pack([TERMINATE, reason])


def log(level: int, message: str) -> bytes:
    return pack([LOG, level, message])


def credit(job: int, nbytes: int) -> bytes:
    return pack([CREDIT, job, nbytes])
