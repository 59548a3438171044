"""ZeroMQ helpers for the hot path.

pyzmq's ``send_multipart`` builds an ``IntFlag`` for every frame, which costs about three times the
sends themselves (14.7 us against 4.4 us for a 4-frame message, measured on a 2-core VM), so every
hot path sends frame by frame with plain int flags.
"""

from __future__ import annotations

import zmq

SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags)`` for a list of bytes, without the enum overhead.

    With NOBLOCK only the first frame can raise ``zmq.Again``: ZeroMQ accepts or refuses a
    multipart message as a whole.
    """
    send = sock.send
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        send(frame, flags | SNDMORE if i < last else flags)


def split_envelope(frames: list) -> tuple[list, list]:
    """Split a message received on a ROUTER socket into its envelope and its body.

    The envelope runs up to and including the empty delimiter a REQ socket adds; a DEALER peer that
    sends none has only its identity frame as envelope. Replies go back as ``envelope + frames``.
    """
    try:
        split = frames.index(b"", 1) + 1
    except ValueError:
        split = 1
    return frames[:split], frames[split:]
