"""The app's log lines, sent to the engine as protocol ``log`` messages (docs/protocol.md).

An app logs with the standard :mod:`logging` module; the worker forwards every record (INFO and up
unless the app sets another level) with its level, and the engine logs it and publishes it on the
app's pubsub endpoint, attributed to the app and the worker (docs/pubsub.md). What an app prints to
stdout or stderr is captured by the engine from the process's pipes instead.

A handler that raises is reported the same way, once: one ``log`` message at ERROR whose first line
is the summary and whose further lines are the traceback.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback

from cocaine.core import logs, worker_protocol

_RUNTIME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: Logger names not worth repeating in front of the message.
_ANONYMOUS = ("root", "cocaine_app_")


def app_error(job: int, task: str, error: BaseException) -> bytes:
    """The ``log`` message for a handler that raised: its traceback from the app's own frames on
    (the runtime's frames that called the handler are left out)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == _RUNTIME:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb)).rstrip()
    summary = f"task {task!r} job {job} failed: {type(error).__name__}: {error}"
    return worker_protocol.log(logging.ERROR, f"{summary}\n{text}")


def load_failure(path: str, error: BaseException) -> bytes:
    """The ``log`` message of a worker whose app cannot load: the summary (which the engine shows as
    the app's broken reason), then the traceback."""
    return worker_protocol.log(logging.ERROR, f"cannot load {path}: {type(error).__name__}: {error}\n"
                                       f"{traceback.format_exc().rstrip()}")


class LogForwarder(logging.Handler):
    """Turns log records into protocol ``log`` messages for the worker's loop to send.

    Records wait in :attr:`pending` until the loop sends what it has (:meth:`collect`): with a
    handler's next chunk, or when it returns. A handler that hangs therefore sends nothing, its log
    lines included, and the engine's heartbeat timeout still catches it (docs/protocol.md). The
    socket belongs to the loop's thread, so no other thread sends on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.owner = threading.get_ident()
        self.pending: list[bytes] = []
        self._pending_lock = threading.Lock()

    @classmethod
    def install(cls, *, own_process: bool) -> LogForwarder:
        """Forward the records of the whole process (a process worker, whose root logger goes to INFO)
        or, in a thread worker inside the daemon, of the calling thread only."""
        forwarder = cls()
        root = logging.getLogger()
        if own_process:
            root.setLevel(logging.INFO)
        else:
            forwarder.addFilter(lambda record: record.thread == forwarder.owner)
            logs.claim_thread()  # the daemon's own log handler leaves this thread's records to us
        root.addHandler(forwarder)
        return forwarder

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self)
        if self.owner == threading.get_ident():
            logs.release_thread()
        self.close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            frame = worker_protocol.log(record.levelno, self.text(record))
        except Exception:  # noqa: BLE001 - logging never raises into the app
            self.handleError(record)
            return
        with self._pending_lock:
            self.pending.append(frame)

    def collect(self) -> list[bytes]:
        """The records logged since the last call, for the loop to send."""
        with self._pending_lock:
            pending, self.pending = self.pending, []
        return pending

    @staticmethod
    def text(record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not record.name.startswith(_ANONYMOUS):
            message = f"{record.name}: {message}"
        if record.exc_info:
            message = f"{message}\n{''.join(traceback.format_exception(*record.exc_info)).rstrip()}"
        if record.stack_info:
            message = f"{message}\n{record.stack_info}"
        return message
