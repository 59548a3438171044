"""Credit by job time (docs/pools.md, "Credit by job time") in every language on every backend it
supports, behind a real daemon running the conformance app's `slow` task: once a warm worker has
shown jobs of 50 ms, it holds no more than it finishes in 10 ms (one), so a burst of them waits in the
engine's queue, where the pool grows for it. A JavaScript worker runs its jobs at the same time and
keeps its whole credit."""

import pytest

from runtimes import serve_slow_task
from support import dealer

pytestmark = pytest.mark.timeout(120)

CASES = [("python", "process"), ("python", "thread"), ("cpp", "process"), ("cpp", "thread"), ("perl", "process"),
         ("js", "process")]  # perl and js cannot run on threads (docs/pools.md)
BURST = 32


@pytest.mark.parametrize(("language", "backend"), CASES, ids=[f"{lang}-{backend}" for lang, backend in CASES])
def test_slow_jobs_get_shallow_credit_and_a_burst_of_them_grows_the_pool(module_daemon, zmq_context, language,
                                                                           backend, request):
    app = f"credit-{language}-{backend}"
    address = serve_slow_task(module_daemon, app, language, request.getfixturevalue("conformance_app"),
                              {"backend": backend, "pool-limit": 4, "pool-min": 1, "concurrency": 32})
    client = dealer(zmq_context, address, 30_000)
    try:
        for _ in range(3):  # one at a time: the engine learns how long they take
            client.send_multipart([b"", b"50"])
            assert client.recv_multipart() == [b"", b"ok", b"slept 50"]
        pool = module_daemon.info(app)["pool"]
        if language == "js":
            assert (pool["credit"], pool["job-time"]) == (32, None), pool
        else:
            assert pool["credit"] == 1 and pool["job-time"] >= 0.05, pool
        for _ in range(BURST):
            client.send_multipart([b"", b"50"])
        assert [client.recv_multipart() for _ in range(BURST)] == [[b"", b"ok", b"slept 50"]] * BURST
        pool = module_daemon.info(app)["pool"]
        if language == "js":  # its worker awaits them together: nothing to learn from their time
            assert (pool["credit"], pool["job-time"]) == (32, None), pool
        else:  # on the warm worker alone, they would have taken 1.6 s
            assert pool["spawned"] >= 3, f"{pool['spawned']} workers started"
    finally:
        client.close(0)
        module_daemon.request({"version": 2, "action": "delete", "apps": [app]})
