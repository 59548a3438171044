"""The daemon's side of a language's fork server: a process that loads one app generation's code
once and forks ready workers on demand (docs/pools.md, "The fork server").

The server is exec'd fresh by the process backend (never forked from the daemon) with one end of a
``SOCK_SEQPACKET`` socket pair as ``--control-fd``. Each packet is one JSON object:

- server -> daemon, once: ``{"ready": pid}`` when it can fork, or ``{"unforkable": reason}`` when the
  app's import made forking unsafe (it then exits). A server that cannot import the app exits
  without a word: the worker started instead by exec reports the error, as it always did.
- daemon -> server: ``{"id": worker id, "env": {...}}`` with the write ends of the worker's stdout
  and stderr pipes attached (``SCM_RIGHTS``); server -> daemon: ``{"pid": pid}`` or ``{"error": why}``.
- server -> daemon, at any time: ``{"spare": pid}``, a process forked ahead of the next request
  (it has imported what a worker imports after the fork and waits to be given a worker id), and
  ``{"gone": pid}``, a spare that exited unused. Spares are the daemon's children too: the daemon
  reaps those that go, and kills those left when the server ends.

Workers are forked with ``CLONE_PARENT``: they are the daemon's children. The daemon reaps them (its
exit status and signal are the kernel's), kills them by pid, and they die with it by
``PR_SET_PDEATHSIG``. Closing the control socket ends the server; its workers live on.

Whenever the server is not ready (starting, dead, unforkable) a worker starts by exec instead, and
a dead server is started again at the next spawn.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess

from cocaine.core.backends import WorkerHandle

log = logging.getLogger(__name__)

#: How long a spawn may wait for the server's answer (a fork takes milliseconds).
SPAWN_TIMEOUT = 2.0


class ForkServer:
    def __init__(self, app: str, argv: list[str]) -> None:
        self.app = app
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.state = "stopped"  # starting, ready, unforkable, stopped
        self.reason: str | None = None  # why it is not ready, once it failed
        self.starts = 0
        self.forked = 0
        self.spares: set[int] = set()  # pids of the server's spares, which are our children

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Exec the server; it says ``ready`` once the app is imported. Never blocks on the import."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = dict(os.environ, COCAINE_PARENT_PID=str(os.getpid()))
            self.proc = subprocess.Popen(
                [*self.argv, "--control-fd", str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env,
                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        except OSError as e:
            ours.close()
            self._failed(f"cannot start: {e}")
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.state = "starting"
        self.starts += 1
        log.debug("app %s: fork server started (pid %d)", self.app, self.proc.pid)

    def spawn(self, worker_id: str, env: dict[str, str]) -> tuple[int, dict[str, int]] | None:
        """Fork a worker: its pid and the read ends of its stdout and stderr, or None when it must
        be started by exec instead (the server is not ready; it is restarted if it died)."""
        if self.state == "stopped" and self.reason is not None:
            self.start()  # it died: start it again; this worker starts by exec
            return None
        if not self._ready():
            return None
        pipes = [os.pipe(), os.pipe()]
        try:
            self.sock.settimeout(SPAWN_TIMEOUT)
            socket.send_fds(self.sock, [json.dumps({"id": worker_id, "env": env}).encode()],
                            [pipes[0][1], pipes[1][1]])
            answer = self._receive()
            while "pid" not in answer and "error" not in answer:
                answer = self._receive()
        except (OSError, ValueError) as e:
            answer = None
            self._lost(f"lost while forking: {e}")
        finally:
            for _, write_end in pipes:
                os.close(write_end)
            if self.sock is not None:
                self.sock.setblocking(False)
        if answer is None or "pid" not in answer:
            if answer is not None:
                log.warning("app %s: fork server could not fork: %s", self.app, answer.get("error"))
            for read_end, _ in pipes:
                os.close(read_end)
            return None
        self.forked += 1
        self.spares.discard(answer["pid"])  # a spare became this worker
        return answer["pid"], {"stdout": pipes[0][0], "stderr": pipes[1][0]}

    def _receive(self) -> dict:
        """The server's next message; spare announcements are applied on the way."""
        message = self.sock.recv(65536)
        if not message:
            raise OSError("it exited")
        answer = json.loads(message)
        if "spare" in answer:
            self.spares.add(answer["spare"])
        elif "gone" in answer:
            self.spares.discard(answer["gone"])
            _reap(answer["gone"])
        return answer

    def _drain(self) -> None:
        """Apply the announcements the server sent since we last listened."""
        if self.sock is None:
            return
        self.sock.setblocking(False)
        try:
            while True:
                self._receive()
        except (BlockingIOError, OSError, ValueError):
            pass

    def _ready(self) -> bool:
        """Whether it can fork now; notices a server that said it is ready, or died."""
        if self.state == "ready":
            if self.proc.poll() is not None:
                self._lost(f"{_describe(self.proc.returncode)} (pid {self.proc.pid})")
                return False
            self._drain()
            return True
        if self.state != "starting":
            return False
        try:
            message = self.sock.recv(65536)
        except BlockingIOError:
            if self.proc.poll() is None:
                return False  # still importing the app
            message = b""
        if not message:
            self._lost(f"{_describe(self.proc.wait())} before it was ready")
            return False
        answer = json.loads(message)
        if "ready" in answer:
            self.state = "ready"
            log.info("app %s: fork server ready (pid %d)", self.app, self.proc.pid)
            return True
        self.state = "unforkable"
        self.reason = answer.get("unforkable", "unknown")
        log.warning("app %s: workers start by exec: its fork server cannot fork it: %s", self.app, self.reason)
        self._release()
        return False

    def _lost(self, reason: str) -> None:
        self._release()
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.state = "stopped"
        self.reason = reason
        log.log(logging.DEBUG if "before it was ready" in reason else logging.WARNING,
                "app %s: fork server %s; workers start by exec until it is back", self.app, reason)

    def close(self) -> None:
        """End the server (its workers live on): the daemon closes the control socket."""
        self._release()
        self.state = "stopped"
        self.reason = None

    def _release(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()  # it holds nothing worth a graceful exit
            self.proc.wait()
            self.proc = None
        if self.sock is not None:
            self._drain()  # the last spare it announced
            self.sock.close()
            self.sock = None
        for pid in self.spares:  # our children: unreaped, so the pid is still theirs
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid)
        self.spares.clear()

    def info(self) -> dict:
        self._ready()  # notices a server that became ready or died
        return {"state": self.state, "pid": self.pid, "starts": self.starts, "forked": self.forked,
                "spares": sorted(self.spares), "reason": self.reason}


def _reap(pid: int) -> None:
    """Wait for a spare that exits (or was killed) now."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _describe(status: int) -> str:
    return f"exited with status {status}" if status >= 0 else f"was killed by {signal.Signals(-status).name}"


class ForkedHandle(WorkerHandle):
    """A worker forked by a fork server: a child of the daemon, so waited for like any other."""

    def __init__(self, pid: int, fds: dict[str, int]) -> None:
        self.pid = pid
        self._fds = fds
        self._returncode: int | None = None
        # It is our child and we have not reaped it: its pid cannot have been reused yet.
        self._pidfd = os.pidfd_open(pid)

    def exit_fd(self) -> int | None:
        return self._pidfd

    def output_fds(self) -> dict[str, int]:
        fds, self._fds = self._fds, {}
        return fds

    def returncode(self) -> int | None:
        if self._returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: what subprocess.Popen reports too
                self._returncode = 0
                return 0
            if pid:
                self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def wait(self, timeout: float) -> bool:
        if self._returncode is None and self._pidfd is not None:
            select.select([self._pidfd], [], [], timeout)
        return self.returncode() is not None

    def kill(self) -> None:
        if self.returncode() is None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.returncode()
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
