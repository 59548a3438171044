"""The Python side of the protocol (cocaine.core.worker_protocol, used by the engine and the Python worker)
against the shared vectors. tests/test_worker_protocol.py holds every runtime to the same bytes."""

import msgpack
import pytest

from cocaine.core import worker_protocol
from cocaine.core.errors import ProtocolError
from vectors import vectors

ENCODERS = {
    "hello": lambda m: worker_protocol.hello(m[2]),
    "heartbeat": lambda m: worker_protocol.HEARTBEAT_FRAME,
    "terminate": lambda m: worker_protocol.terminate(m[1]),
    "invoke": lambda m: worker_protocol.invoke(*m[1:6]),
    "chunk": lambda m: worker_protocol.chunk(m[1], m[2]),
    "end": lambda m: worker_protocol.end(m[1]),
    "error": lambda m: worker_protocol.error(m[1], m[2], m[3]),
    "log": lambda m: worker_protocol.log(m[1], m[2]),
    "credit": lambda m: worker_protocol.credit(m[1], m[2]),
    "meta": lambda m: worker_protocol.meta(m[1], m[2]),
    "handback": lambda m: worker_protocol.handback(m[1]),
    "options": lambda m: worker_protocol.options(m[1]["handback-after"], reply=m[1].get("reply", False)),
    "grant": lambda m: worker_protocol.grant(m[1], m[2]),
    "reply": lambda m: worker_protocol.reply(m[1], m[2]),
}
KINDS = worker_protocol.NAMES


@pytest.mark.parametrize("vector", vectors().values(), ids=lambda v: v.name)
def test_each_vector_decodes_to_its_message(vector):
    assert worker_protocol.unpack(vector.frame) == vector.message


@pytest.mark.parametrize("vector", [v for v in vectors().values() if v.message[0] in KINDS and len(v.message) <= 6],
                         ids=lambda v: v.name)
def test_the_python_encoders_produce_the_vector_bytes(vector):
    kind = KINDS[vector.message[0]]
    assert ENCODERS[kind](vector.message) == vector.frame


def test_the_vectors_cover_every_message_kind_in_both_directions():
    seen = {(v.message[0], v.sender) for v in vectors().values()}
    for number, name in worker_protocol.NAMES.items():
        assert any(kind == number for kind, _ in seen), f"no vector for {name}"
    # What both sides send (chunk, end, heartbeat) has a vector marked as such.
    assert {(worker_protocol.CHUNK, "both"), (worker_protocol.END, "both"), (worker_protocol.HEARTBEAT, "both")} <= seen


def test_vectors_are_canonical_msgpack():
    # Re-encoding the decoded message gives the same bytes: no vector relies on a non-minimal form.
    for v in vectors().values():
        assert msgpack.packb(v.message, use_bin_type=True) == v.frame, v.name


@pytest.mark.parametrize("jobs", [[2, "3"], [2, True], 3, None])
def test_a_handback_with_a_job_that_is_not_an_integer_is_dropped_whole(jobs):
    with pytest.raises(ProtocolError, match="handback: field 1 has the wrong type"):
        worker_protocol.unpack(msgpack.packb([worker_protocol.HANDBACK, jobs]))


def test_a_stream_link_splits_back_to_back_messages_wherever_its_reads_end():
    """On a stream link the messages follow each other with no framing (docs/protocol.md, "Stream
    link"): cut anywhere, every vector still comes out whole, in order."""
    every = list(vectors().values())
    stream = b"".join(v.frame for v in every)
    for size in (1, 2, 3, 7, 64, len(stream)):
        decoder = worker_protocol.StreamDecoder()
        messages = []
        for start in range(0, len(stream), size):
            messages += decoder.feed(stream[start:start + size])
        assert messages == [v.message for v in every], f"reads of {size} bytes"


def test_bytes_that_are_not_msgpack_end_a_stream_link():
    decoder = worker_protocol.StreamDecoder()
    assert decoder.feed(worker_protocol.end(3)) == [[worker_protocol.END, 3]]
    with pytest.raises(ProtocolError, match="not msgpack"):
        decoder.feed(b"\xc1")  # never used by msgpack
