"""No job waits behind a long one (docs/pools.md, "Dispatch"): every language on every backend it
supports, behind a real daemon with real workers running the conformance app's `slow` and `echo`
tasks. Two warm workers with 8 credits each; one 3 s job, then 40 quick ones sent at once: the engine
spreads them over both workers, so some land behind the long job. Each must be answered while the
long job still runs: those that waited on its worker were handed back and ran on the other."""

import time

import pytest
import zmq

from support import endpoint, wait_for

pytestmark = pytest.mark.timeout(120)

CASES = [("python", "process"), ("python", "thread"), ("cpp", "process"), ("cpp", "thread"), ("perl", "process"),
         ("js", "process")]  # perl and js cannot run on threads (docs/pools.md)
#: The runtimes whose workers queue jobs, and so hand them back; a JavaScript worker starts every
#: job as it arrives and awaits them together, so none waits behind the slow one in the first place.
QUEUEING = {"python", "cpp", "perl"}
QUICK = 40


@pytest.mark.parametrize(("language", "backend"), CASES, ids=[f"{lang}-{backend}" for lang, backend in CASES])
def test_quick_jobs_are_answered_while_a_long_job_runs(module_daemon, zmq_context, language, backend, request):
    args = request.getfixturevalue("conformance_app")
    app = f"handback-{language}-{backend}"
    addresses = {task: endpoint() for task in ("slow", "echo")}
    module_daemon.create(app, {
        "type": language, "args": args,
        "engine": {"backend": backend, "pool-limit": 2, "pool-min": 2, "concurrency": 8},
        "tasks": {task: {"type": "zeromq-server", "endpoint": address} for task, address in addresses.items()}})
    try:
        wait_for(lambda: (lambda p: p["total"] == 2 and not p["starting"])(module_daemon.info(app)["pool"]),
                 timeout=30, message="two ready workers")
        long, quick = (zmq_context.socket(zmq.DEALER) for _ in range(2))
        for sock, task in ((long, "slow"), (quick, "echo")):
            sock.linger = 0
            sock.connect(addresses[task])
        long.send_multipart([b"", b"3000"])
        for i in range(QUICK):
            quick.send_multipart([b"", str(i).encode()])
        answered = set()
        deadline = time.monotonic() + 30
        while len(answered) < QUICK:
            assert quick.poll(max(0, deadline - time.monotonic()) * 1000), f"only {len(answered)} quick answers"
            _, status, body = quick.recv_multipart()
            assert status == b"ok"
            answered.add(int(body))
            # The long job may not have answered yet: every quick one came while it still ran.
            if long.poll(0):
                info = module_daemon.info(app)
                raise AssertionError(f"the long job answered before {QUICK - len(answered)} quick ones: "
                                     f"pool {info['pool']}, queue {info['queue']}, jobs {info['jobs']}")
        assert answered == set(range(QUICK))
        assert long.poll(30_000), "the long job never answered"
        assert long.recv_multipart() == [b"", b"ok", b"slept 3000"]
        handed_back = module_daemon.info(app)["queue"]["handed-back"]
        if language in QUEUEING:
            assert handed_back > 0  # the long job's worker had quick jobs queued, and gave them back
        else:
            assert handed_back == 0
        long.close(0)
        quick.close(0)
    finally:
        module_daemon.request({"version": 2, "action": "delete", "apps": [app]})
