"""Running a C++ worker on a thread of the daemon (the thread backend).

A thread worker reaches the engine over its stream link (``fd:N``, the pool's socket pair end the
thread took over, which the host closes when the worker ends): no ZeroMQ at all. Over ZeroMQ (an
``inproc://`` endpoint, as a third party's pool may give), the endpoint exists only inside one
ZeroMQ context of one libzmq: the daemon's, in pyzmq. So the host's ``cocaine_serve_in`` is then
given that context and the functions of pyzmq's own libzmq (found through pyzmq's extension module,
which links it), not those of the system libzmq the host is built against. The ctypes call releases
the GIL for as long as the worker runs: C++ handlers run on every core while the daemon goes on.
"""

from __future__ import annotations

import ctypes
import functools

from cocaine.cpp import build

# The libzmq functions the host calls, in the order of struct cocaine_zmq_api (host/worker.cpp).
FUNCTIONS = ("socket", "setsockopt", "connect", "close", "send", "poll", "msg_init", "msg_recv", "msg_data",
             "msg_size", "msg_close", "strerror")


class ZmqApi(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in FUNCTIONS]


@functools.cache
def pyzmq_api() -> ZmqApi:
    """The functions of the libzmq pyzmq runs on: a symbol looked up through its extension module's
    handle is found in the libraries it links, bundled or the system's."""
    from zmq.backend.cython import _zmq

    extension = ctypes.CDLL(_zmq.__file__)
    return ZmqApi(*(ctypes.cast(getattr(extension, f"zmq_{name}"), ctypes.c_void_p).value for name in FUNCTIONS))


@functools.cache
def _serve_in():
    function = ctypes.CDLL(str(build.host().library)).cocaine_serve_in
    function.argtypes = [ctypes.c_void_p, ctypes.POINTER(ZmqApi), ctypes.c_char_p, ctypes.c_char_p,
                         ctypes.c_char_p, ctypes.c_double]
    function.restype = ctypes.c_int
    return function


def serve(zmq_context, *, endpoint: str, worker_id: str, path: str, heartbeat: float) -> int:
    """Serve one worker in the calling thread until it is told to stop; return its exit status.
    ``zmq_context`` is needed only over ZeroMQ (not for an ``fd:N`` endpoint)."""
    if endpoint.startswith("fd:"):
        context, api = None, None
    else:
        context, api = zmq_context.underlying, ctypes.byref(pyzmq_api())
    return _serve_in()(context, api, endpoint.encode(), worker_id.encode(), path.encode(), heartbeat)
