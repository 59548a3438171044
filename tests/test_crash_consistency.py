"""SIGKILL during a burst of create / reload / delete, then a restart: storage stays consistent.

Every manifest in storage parses and starts (none half written), no temporary file is loaded as an
app (and none outlives the restart), and every answered write is on disk; a write in flight at the
kill may have happened or not, nothing in between.
"""

from __future__ import annotations

import json
import random
import threading

import zmq

from support import endpoint, manifest, python_app, wait_for

ROUNDS = 5
WRITERS = 3  # concurrent clients, so that the daemon is always in the middle of some write
APPS_PER_WRITER = 2
PAD = "x" * 65536  # a manifest of 64 KiB: each write takes a while


class Writer(threading.Thread):
    """Cycles its own apps through create → reload → delete until told to stop, keeping a model of
    what storage must hold: ``state[app]`` (None: absent, else the version last answered) and
    ``in_flight`` (the app and the state it would have if the unanswered request went through)."""

    def __init__(self, context: zmq.Context, address: str, args: str, apps: list[str], state: dict,
                 tag: str) -> None:
        super().__init__(daemon=True)
        self.context, self.address, self.args, self.apps, self.state, self.tag = context, address, args, apps, state, tag
        self.answered = 0
        self.in_flight: tuple[str, str | None] | None = None
        self.errors: list = []
        self.stop = threading.Event()
        self.reloaded: set[str] = set()
        self.endpoints = {app: endpoint() for app in apps}  # no worker starts: nobody calls them

    def run(self) -> None:
        sock = self.context.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(self.address)
        try:
            for step in range(10**9):
                app = self.apps[step % len(self.apps)]
                request, after = self.next_request(app, step)
                self.in_flight = (app, after)
                sock.send(json.dumps(request).encode())
                while not sock.poll(50):
                    if self.stop.is_set():
                        return  # killed with the request unanswered: in_flight stays
                reply = json.loads(sock.recv())
                if "error" in reply.get(app, reply):
                    self.errors.append((request["action"], app, reply))
                    return
                self.state[app] = after
                self.in_flight = None
                self.answered += 1
        finally:
            sock.close(0)

    def next_request(self, app: str, step: int) -> tuple[dict, str | None]:
        current = self.state[app]
        if current is None:
            version = f"{self.tag}-{step}-{PAD}"
            m = manifest(self.args, {"echo": {"type": "zeromq-server", "endpoint": self.endpoints[app]}})
            return {"version": 2, "action": "create", "apps": {app: dict(m, version=version)}}, version
        if app not in self.reloaded:
            self.reloaded.add(app)
            return {"version": 2, "action": "reload", "apps": [app]}, current
        self.reloaded.discard(app)
        return {"version": 2, "action": "delete", "apps": [app]}, None


def stored(daemon) -> tuple[dict[str, str], list[str]]:
    """The apps in storage (name -> version; each file must parse) and the temporary files there."""
    folder = daemon.storage / "default" / "apps"
    apps, temporary = {}, []
    for path in folder.iterdir() if folder.exists() else ():
        if path.name.startswith("."):
            temporary.append(path.name)
        else:
            apps[path.name] = json.loads(path.read_text())["version"]
    return apps, temporary


def test_sigkill_during_writes_then_restart_leaves_every_manifest_whole(make_daemon, tmp_path, zmq_context):
    args = python_app(tmp_path, "def echo(request):\n    return request.body\n")
    daemon = make_daemon().start()
    state = {f"w{w}-app{a}": None for w in range(WRITERS) for a in range(APPS_PER_WRITER)}
    rng = random.Random()
    left_behind = 0
    for round_ in range(ROUNDS):
        writers = [Writer(zmq_context, daemon.management, args,
                          [f"w{w}-app{a}" for a in range(APPS_PER_WRITER)], state, f"r{round_}w{w}")
                   for w in range(WRITERS)]
        for writer in writers:
            writer.start()
        # A random moment in the burst: once this many writes in all were answered.
        moment = rng.randrange(3, 40)
        wait_for(lambda: sum(w.answered for w in writers) >= moment or any(w.errors for w in writers),
                 timeout=60, message=f"{moment} answered writes")
        daemon.proc.kill()
        daemon.proc.wait(10)
        for writer in writers:
            writer.stop.set()
            writer.join(10)
        assert not [w.errors for w in writers if w.errors]

        apps, temporary = stored(daemon)
        left_behind += len(temporary)
        if round_ == 0:
            # What a kill between the temporary file's creation and its rename leaves, for certain
            # once: a half-written manifest.
            (daemon.storage / "default" / "apps" / ".w0-app0.k1ll3d.tmp").write_text('{"type": "pyth')
            temporary.append(".w0-app0.k1ll3d.tmp")
        for writer in writers:
            for app in writer.apps:
                allowed = {state[app]}
                if writer.in_flight and writer.in_flight[0] == app:
                    allowed.add(writer.in_flight[1])
                assert apps.get(app) in allowed, (app, (apps.get(app) or "")[:20], [(v or "")[:20] for v in allowed])
                state[app] = apps.get(app)

        daemon.start()
        info = daemon.info()["apps"]
        assert {name: app.get("version") for name, app in info.items()} == apps, "every stored app, running"
        assert all(app["running"] for app in info.values()), info
        assert stored(daemon) == (apps, [])  # the leftovers were swept
        for name in temporary:
            assert f"storage: removing {daemon.storage / 'default' / 'apps' / name}, left by a write that never " \
                   f"finished" in daemon.log()
    print(f"\n{ROUNDS} SIGKILLs: {left_behind} temporary files left by interrupted writes (swept at restart)")
