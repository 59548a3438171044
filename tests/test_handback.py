"""No job waits behind a long one (docs/pools.md, "Dispatch"): every language on every backend it
supports, behind a real daemon with real workers running the conformance app's `slow` task. One
warm worker with 8 credits (room for a second); one 3 s job, then 40 quick ones on the same
connection, so the engine reads them in that order: the first quick ones go to the only worker,
behind the long job. Each must be answered while the long job still runs: those that waited on its
worker were handed back and ran on another."""

import time

import pytest

from runtimes import serve_slow_task
from support import dealer

pytestmark = pytest.mark.timeout(120)

CASES = [("python", "process"), ("python", "thread"), ("cpp", "process"), ("cpp", "thread"), ("perl", "process"),
         ("js", "process")]  # perl and js cannot run on threads (docs/pools.md)
#: The runtimes whose workers queue jobs, and so hand them back; a JavaScript worker starts every
#: job as it arrives and awaits them together, so none waits behind the slow one in the first place.
QUEUEING = {"python", "cpp", "perl"}
QUICK = 40


@pytest.mark.parametrize(("language", "backend"), CASES, ids=[f"{lang}-{backend}" for lang, backend in CASES])
def test_quick_jobs_are_answered_while_a_long_job_runs(module_daemon, zmq_context, language, backend, request):
    app = f"handback-{language}-{backend}"
    address = serve_slow_task(module_daemon, app, language, request.getfixturevalue("conformance_app"),
                              {"backend": backend, "pool-limit": 2, "pool-min": 1, "concurrency": 8})
    try:
        client = dealer(zmq_context, address)
        # An envelope frame names each request: its answer comes back under it.
        client.send_multipart([b"long", b"", b"3000"])
        for i in range(QUICK):
            client.send_multipart([str(i).encode(), b"", b"0"])
        answered = set()
        deadline = time.monotonic() + 30
        while len(answered) < QUICK:
            assert client.poll(max(0, deadline - time.monotonic()) * 1000), f"only {len(answered)} quick answers"
            name, _, status, body = client.recv_multipart()
            if name == b"long":  # every quick one must come while it still runs
                info = module_daemon.info(app)
                raise AssertionError(f"the long job answered before {QUICK - len(answered)} quick ones: "
                                     f"pool {info['pool']}, queue {info['queue']}, jobs {info['jobs']}")
            assert (status, body) == (b"ok", b"slept 0")
            answered.add(int(name))
        assert answered == set(range(QUICK))
        assert client.poll(30_000), "the long job never answered"
        assert client.recv_multipart() == [b"long", b"", b"ok", b"slept 3000"]
        handed_back = module_daemon.info(app)["queue"]["handed-back"]
        if language in QUEUEING:
            assert handed_back > 0  # the long job's worker had quick jobs queued, and gave them back
        else:
            assert handed_back == 0
        client.close(0)
    finally:
        module_daemon.request({"version": 2, "action": "delete", "apps": [app]})
