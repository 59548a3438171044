"""The daemon's side of a language's fork server: a process that loads one app generation's code
once and forks ready workers on demand (docs/pools.md, "The fork server").

The server is exec'd fresh by the process backend (never forked from the daemon) with one end of a
``SOCK_SEQPACKET`` socket pair as ``--control-fd``, and ``--spares K``, how many spares to keep
(below). Each packet is one JSON object:

- server -> daemon, once: ``{"ready": pid}`` when it can fork, or ``{"unforkable": reason}`` when the
  app's import made forking unsafe (it then exits). A server that cannot import the app exits
  without a word: the worker started instead by exec reports the error, as it always did.
- daemon -> server: ``{"id": worker id, "env": {...}}`` with three or four descriptors attached
  (``SCM_RIGHTS``): the write ends of the worker's stdout and stderr pipes, the worker's end of its
  stream link when it has one (the server was started with ``--endpoint fd``), and last one end of
  a socket pair of its own, on which the server answers ``{"pid": pid}`` or ``{"error": why}`` and
  closes it.
  The daemon never waits for the answer: it reads it when its loop sees that socket readable, and
  may send the next requests meanwhile (a burst's workers are forked while the engine runs).
- server -> daemon, at any time: ``{"spare": pid}``, a process forked ahead of the next request
  (it waits to be given a worker id; the server keeps K of them, forked while no request waits), and
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
#: The return code of a worker the server was asked for but did not fork (it never ran).
EXIT_NOT_FORKED = 127


class ForkServer:
    def __init__(self, app: str, argv: list[str], spares: int) -> None:
        self.app = app
        self.argv = argv
        self.spare_count = spares  # how many spares the server keeps
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.state = "stopped"  # starting, ready, unforkable, stopped
        self.reason: str | None = None  # why it is not ready, once it failed
        self.starts = 0
        self.forked = 0
        self.spares: set[int] = set()  # pids of the server's spares, which are our children
        self.pending: set[ForkedHandle] = set()  # workers asked for, their answer not read yet

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Exec the server; it says ``ready`` once the app is imported. Never blocks on the import."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = dict(os.environ, COCAINE_PARENT_PID=str(os.getpid()))
            self.proc = subprocess.Popen(
                [*self.argv, "--control-fd", str(theirs.fileno()), "--spares", str(self.spare_count)],
                pass_fds=[theirs.fileno()], env=env,
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

    def spawn(self, requests: list[tuple[str, dict[str, str], socket.socket | None]]) -> list[ForkedHandle | None]:
        """Ask for a worker for each (worker id, env, stream link) of ``requests``: for each, the handle of a
        worker being forked, or None when it must be started by exec instead (the server is not
        ready; it is restarted if it died). Never waits for the server: each request carries its
        own answer socket, which the handle reads when the engine's loop sees it readable."""
        if self.state == "stopped" and self.reason is not None:
            self.start()  # it died: start it again; these workers start by exec
            return [None] * len(requests)
        if not self._ready():
            return [None] * len(requests)
        handles: list[ForkedHandle | None] = []
        for worker_id, env, link in requests:
            if self.sock is None:  # lost at the previous request
                handles.append(None)
                continue
            stdout, stderr = os.pipe(), os.pipe()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self.sock.settimeout(SPAWN_TIMEOUT)  # a few bytes: only a server that hangs blocks
                links = [] if link is None else [link.fileno()]
                socket.send_fds(self.sock, [json.dumps({"id": worker_id, "env": env}).encode()],
                                [stdout[1], stderr[1], *links, theirs.fileno()])
            except OSError as e:
                ours.close()
                os.close(stdout[0])
                os.close(stderr[0])
                handles.append(None)
                self._lost(f"lost while forking: {e}")
            else:
                handle = ForkedHandle(self, ours, {"stdout": stdout[0], "stderr": stderr[0]})
                self.pending.add(handle)
                handles.append(handle)
            finally:
                theirs.close()
                os.close(stdout[1])
                os.close(stderr[1])
                if self.sock is not None:
                    self.sock.setblocking(False)
        return handles

    def forked_one(self, handle: ForkedHandle, pid: int | None, error: str | None = None) -> None:
        """A request was answered: with the worker's ``pid``, or not forked (``error``). A server
        that cannot fork is given up (killed if it lives): workers start by exec until the next
        spawn starts a new one."""
        self.pending.discard(handle)
        if pid is not None:
            # The server announced the spare (if it was one) before it handed it out: applied
            # first, so that it is not taken for a spare still waiting afterwards.
            self._drain()
            self.forked += 1
            self.spares.discard(pid)  # a spare became this worker
        elif self.state == "ready":
            self._lost(f"did not fork a worker: {error}")

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
        self.state = "stopped"  # first: the answers _release reads find it gone already
        self._release()
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.state = "stopped"
        self.reason = reason
        log.log(logging.DEBUG if "before it was ready" in reason else logging.WARNING,
                "app %s: fork server %s; workers start by exec until it is back", self.app, reason)

    def close(self) -> None:
        """End the server (its workers live on): the daemon closes the control socket."""
        self.state = "stopped"
        self.reason = None
        self._release()

    def _release(self) -> None:
        # The answers first: a spare that became a worker must not be killed below as a spare.
        for handle in list(self.pending):
            handle.take_answer()
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
    """A worker forked by a fork server: a child of the daemon, so waited for like any other. Its
    pid arrives after the handle is made: the server answers on the request's own socket, which
    is ``start_fd`` until the engine calls ``confirm`` (the server may read the answer before,
    when it goes: the socket stays the engine's to unwatch and close)."""

    def __init__(self, server: ForkServer, answer: socket.socket, fds: dict[str, int]) -> None:
        self.pid = None
        self._server = server
        self._answer: socket.socket | None = answer
        self._reply: dict | None = None
        self._fds = fds
        self._returncode: int | None = None
        self._pidfd: int | None = None

    def start_fd(self) -> int | None:
        return self._answer.fileno() if self._answer is not None else None

    def take_answer(self) -> None:
        """Read the server's answer (waiting for it if need be), once."""
        if self._reply is not None:
            return
        try:
            self._answer.settimeout(SPAWN_TIMEOUT)  # readable already, unless it is needed first
            message = self._answer.recv(65536)
            self._reply = json.loads(message) if message else {"error": "the fork server exited before it answered"}
        except (OSError, ValueError) as e:
            self._reply = {"error": f"no answer from the fork server: {e}"}
        self._server.forked_one(self, self._reply.get("pid"), self._reply.get("error"))

    def confirm(self) -> None:
        if self._answer is None:
            return
        self.take_answer()
        self._answer.close()
        self._answer = None
        pid = self._reply.get("pid")
        if pid is None:
            self._returncode = EXIT_NOT_FORKED
            raise OSError(f"could not be forked: {self._reply.get('error')}")
        self.pid = pid
        # It is our child and we have not reaped it: its pid cannot have been reused yet.
        self._pidfd = os.pidfd_open(pid)

    def exit_fd(self) -> int | None:
        return self._pidfd

    def output_fds(self) -> dict[str, int]:
        fds, self._fds = self._fds, {}
        return fds

    def returncode(self) -> int | None:
        if self._returncode is None and self.pid is not None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: what subprocess.Popen reports too
                self._returncode = 0
                return 0
            if pid:
                self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def wait(self, timeout: float) -> bool:
        self._confirm_quietly()
        if self._returncode is None and self._pidfd is not None:
            select.select([self._pidfd], [], [], timeout)
        return self.returncode() is not None

    def kill(self) -> None:
        self._confirm_quietly()
        if self.returncode() is None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _confirm_quietly(self) -> None:
        try:
            self.confirm()  # a worker must be known to be waited for or killed
        except OSError:
            pass  # never forked: nothing to wait for

    def close(self) -> None:
        if self._answer is not None:  # asked to close before its answer: take it, or it is never reaped
            self._confirm_quietly()
        self.returncode()
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
