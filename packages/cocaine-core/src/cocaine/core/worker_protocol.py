"""The engine <-> worker protocol (specified in docs/protocol.md).

Every protocol message is a msgpack array whose first element is the message type. Two links carry
them. Over ZeroMQ, a message between the engine (ROUTER) and a worker (DEALER) carries one or more
protocol messages, one per frame: batching them saves a wake-up per message on the hot path. Over a
*stream link*, a Unix stream socket the engine hands the worker at its start, they follow each
other back to back (msgpack is self-delimiting), with no ZeroMQ I/O thread on either side.
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
# worker -> engine: the response's metadata (an HTTP status and headers), before its first chunk
META = 10  # [META, job, meta]
# worker -> engine: jobs the worker will never start; the engine runs them elsewhere (docs/pools.md)
HANDBACK = 11  # [HANDBACK, [job, ...]]
# engine -> worker: what the engine offers this worker, a map (unknown keys ignored); sent after hello
OPTIONS = 12  # [OPTIONS, {"handback-after": seconds, "reply": true}]
# engine -> worker: the job's response may have this many more bytes (flow control of responses)
GRANT = 13  # [GRANT, job, bytes]
# worker -> engine: a response's last chunk and its end in one message (to an engine that offers it)
REPLY = 14  # [REPLY, job, data]

#: Bytes of response a worker may send for a job beyond what the engine granted (docs/protocol.md).
RESPONSE_WINDOW = 256 * 1024

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
    META: "meta",
    HANDBACK: "handback",
    OPTIONS: "options",
    GRANT: "grant",
    REPLY: "reply",
}

_packer = msgpack.Packer(use_bin_type=True)
pack = _packer.pack

HEARTBEAT_FRAME = pack([HEARTBEAT])


_INT = "int"  # an integer, not a boolean
_INTS = "ints"  # an array of integers
#: The fields of each known message after its type; extra trailing elements are allowed (and ignored).
SHAPES: dict[int, tuple] = {
    HELLO: (_INT, _INT),
    HEARTBEAT: (),
    TERMINATE: (str,),
    INVOKE: (_INT, str, dict, (bytes, type(None)), bool),
    CHUNK: (_INT, bytes),
    END: (_INT,),
    ERROR: (_INT, _INT, str),
    LOG: (_INT, str),
    CREDIT: (_INT, _INT),
    META: (_INT, dict),
    GRANT: (_INT, _INT),
    REPLY: (_INT, bytes),
    HANDBACK: (_INTS,),
    OPTIONS: (dict,),
}


def unpack(frame) -> list:
    """Decode one frame into a protocol message, or raise ProtocolError saying what is wrong.

    A known message type must carry its fields with the right types (``SHAPES``), so that no
    receiver acts on a half-valid message. Unknown types pass: receivers ignore them.
    """
    try:
        message = _unpackb(frame, raw=False)
    except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise ProtocolError(f"frame is not valid msgpack: {e}") from None
    return validate(message)


def validate(message) -> list:
    """Return a decoded message if it is a well-formed protocol message, or raise ProtocolError."""
    # Every message of the hot path comes here: one exact-type check per field (msgpack makes only
    # exact types), and the slow path only to say what is wrong.
    if type(message) is list and message and type(message[0]) is int:
        check = _CHECKS.get(message[0])
        if check is None or check(message):
            return message
    _explain(message)
    return message


def _explain(message) -> None:
    """Raise ProtocolError naming what is wrong with a decoded message that failed its check."""
    if not isinstance(message, list) or not message or type(message[0]) is not int:
        raise ProtocolError("frame is not a msgpack array starting with a message type")
    shape = SHAPES.get(message[0])
    if shape is not None:
        if len(message) <= len(shape):
            raise ProtocolError(f"{NAMES[message[0]]}: expected {len(shape)} fields, got {len(message) - 1}")
        for i, expected in enumerate(shape, 1):
            value = message[i]
            if expected is _INT:
                wrong = type(value) is not int
            elif expected is _INTS:
                wrong = type(value) is not list or any(type(v) is not int for v in value)
            else:
                wrong = not isinstance(value, expected)
            if wrong:
                raise ProtocolError(f"{NAMES[message[0]]}: field {i} has the wrong type ({type(value).__name__})")


def _check(shape: tuple):
    """A function telling whether a message (a list) has ``shape``'s fields, with exact types.

    Written out as one expression per shape (``type(m[1]) is int and ...``): every message of the
    hot path goes through one, and an ``is`` is cheaper than a loop or a tuple's ``in``."""
    if _INTS in shape:
        return lambda m: False  # checked element by element in _explain: a handback is rare
    names: dict = {}
    terms = [f"len(m) > {len(shape)}"]
    for i, field in enumerate(shape, 1):
        types = (int,) if field is _INT else field if isinstance(field, tuple) else (field,)
        names[f"t{i}"] = types[0] if len(types) == 1 else types
        terms.append(f"type(m[{i}]) {'is' if len(types) == 1 else 'in'} t{i}")
    return eval("lambda m: " + " and ".join(terms), names)  # noqa: S307 - built from SHAPES only


_unpackb = msgpack.unpackb
_CHECKS = {kind: _check(shape) for kind, shape in SHAPES.items()}


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


def meta(job: int, meta: dict) -> bytes:
    return pack([META, job, meta])


def handback(jobs: list[int]) -> bytes:
    return pack([HANDBACK, jobs])


def options(handback_after: float, reply: bool = False) -> bytes:
    offered = {"handback-after": float(handback_after)}
    if reply:
        offered["reply"] = True
    return pack([OPTIONS, offered])


def grant(job: int, nbytes: int) -> bytes:
    return pack([GRANT, job, nbytes])


def reply(job: int, data: bytes) -> bytes:
    return pack([REPLY, job, data])


class StreamDecoder:
    """Splits the bytes of a stream link into protocol messages: fed what each read returned, it
    gives the whole messages decoded so far (not yet validated); a message cut between two reads
    waits for its end. Bytes that are not msgpack raise ProtocolError: past them the stream can no
    longer be split into messages, so the link is over."""

    __slots__ = ("_unpacker",)

    def __init__(self) -> None:
        # No size limit of its own (0: 4 GiB), as over ZeroMQ: a message is as large as its body.
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)

    def feed(self, data: bytes) -> list:
        unpacker = self._unpacker
        unpacker.feed(data)
        try:
            return list(unpacker)
        except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise ProtocolError(f"the stream link carries bytes that are not msgpack ({why})") from None
