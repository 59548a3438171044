"""The ``thread`` backend: workers run as threads inside the daemon, over inproc sockets (or their
stream links, when their language has them).

Cheaper to start and lighter than processes, and native code that releases the GIL uses every core.
The price: a thread cannot be killed. A hung worker is abandoned (its jobs fail and a new worker
replaces it) but goes on running until its handler returns, and code that crashes the process
(a segfault, ``os._exit``) takes the whole daemon down. See docs/manifest.md.
"""

from __future__ import annotations

import logging
import os
import threading

from cocaine.core.backends import Backend, WorkerHandle
from cocaine.core.errors import ConfigError
from cocaine.core.languages import WorkerSpec

log = logging.getLogger(__name__)

ABANDONED = -9  # the status an abandoned thread reports, as if killed


class ThreadHandle(WorkerHandle):
    def __init__(self, spec: WorkerSpec, zmq_context) -> None:
        self._exit_r, self._exit_w = os.pipe()
        self._status: int | None = None
        self._abandoned = False
        self._lock = threading.Lock()
        self._close_on_exit = False
        self.thread = threading.Thread(target=self._run, args=(spec, zmq_context), name=f"worker-{spec.worker_id}",
                                       daemon=True)
        self.thread.start()

    def _run(self, spec: WorkerSpec, zmq_context) -> None:
        status = 1
        try:
            status = spec.run_in_thread(zmq_context)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            log.exception("worker thread %s failed", spec.worker_id)
        finally:
            with self._lock:
                self._status = status
                os.write(self._exit_w, b"x")  # wakes the pool, like a process's pidfd
                if self._close_on_exit:
                    self._close_fds()

    def exit_fd(self) -> int | None:
        return None if self._close_on_exit else self._exit_r

    def returncode(self) -> int | None:
        if self._status is not None:
            return self._status
        return ABANDONED if self._abandoned else None

    def wait(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def kill(self) -> None:
        if self.thread.is_alive() and not self._abandoned:
            self._abandoned = True
            log.warning("worker thread %s cannot be killed: abandoned while it runs", self.thread.name)

    def close(self) -> None:
        with self._lock:
            if self._status is None:
                self._close_on_exit = True  # the thread still writes to the pipe when it ends
            else:
                self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._exit_r, self._exit_w):
            try:
                os.close(fd)
            except OSError:
                pass


class ThreadBackend(Backend):
    name = "thread"
    transport = "inproc"

    def spawn(self, spec: WorkerSpec) -> ThreadHandle:
        if spec.run_in_thread is None:
            raise ConfigError(f"app {spec.app!r}: its language cannot run workers as threads; use the process backend")
        handle = ThreadHandle(spec, self.zmq_context)
        if spec.link is not None:
            spec.link.detach()  # the worker thread owns its end now, and closes it when it ends
        return handle
