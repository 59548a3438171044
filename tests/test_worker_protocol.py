"""Every language's worker runtime against the protocol, frame by frame: a scripted engine sends the
shared vectors (tests/vectors/protocol.json) to a real worker process and checks the exact bytes
it answers with. docs/protocol.md is the specification."""

import time

import pytest

from cocaine.core import worker_protocol
from runtimes import BROKEN_APPS, LANGUAGES, PACED, ScriptedEngine, app_source, require_runtime
from vectors import frame

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=LANGUAGES)
def language(request):
    return request.param


@pytest.fixture(params=["zeromq", "stream"])
def link(request):
    """How the worker reaches the scripted engine: every runtime over ZeroMQ, and those whose
    language has stream links over one too (the others' stream cases are deselected: conftest.py)."""
    return request.param


@pytest.fixture
def start(zmq_context, tmp_path, link):
    """start(language, args, heartbeat=5.0) -> a ScriptedEngine talking to one new worker."""
    engines = []

    def start(language, args, heartbeat=5.0):
        engine = ScriptedEngine(zmq_context, tmp_path)
        engines.append(engine)
        return engine.start_worker(language, args, heartbeat, link=link)

    yield start
    for engine in engines:
        engine.close()


@pytest.fixture
def worker(start, language, conformance_app):
    """A worker of the conformance app that has said hello."""
    engine = start(language, conformance_app)
    assert engine.hello() == worker_protocol.hello(engine.proc.pid)
    return engine


@pytest.fixture
def quick_worker(start, language, conformance_app):
    """The same, with a heartbeat interval of 0.2 s."""
    engine = start(language, conformance_app, heartbeat=0.2)
    engine.hello()
    return engine


def test_hello_then_a_whole_request_is_answered_with_the_vector_bytes(worker):
    worker.send(frame("invoke"))
    assert worker.frames(2) == [frame("chunk"), frame("end")]


def test_job_ids_of_every_width(worker):
    worker.send(frame("invoke, job 300"), frame("invoke, job 70000"), frame("invoke, job 2**33"))
    assert worker.replies([300, 70000, 2**33]) == {
        300: [frame("chunk, job 300"), worker_protocol.end(300)],
        70000: [frame("chunk, job 70000"), worker_protocol.end(70000)],
        2**33: [frame("chunk, job 2**33"), worker_protocol.end(2**33)],
    }


def test_bodies_of_every_size(worker):
    worker.send(worker_protocol.invoke(1, "echo", {}, b"x" * 300, True))
    assert worker.frames(2) == [frame("chunk, 300 bytes"), frame("end")]
    big = bytes(range(256)) * 300  # bin 32, and every byte value
    worker.send(worker_protocol.invoke(2, "echo", {}, big, True))
    assert worker.frames(2) == [worker_protocol.chunk(2, big), worker_protocol.end(2)]


def test_a_nil_body_is_an_empty_body(worker):
    worker.send(frame("invoke, no body"))
    assert worker.frames(2) == [worker_protocol.chunk(2, b""), worker_protocol.end(2)]


def test_timer_metadata_reaches_the_handler(worker):
    worker.send(frame("invoke, timer metadata"))
    assert worker.frames(2) == [worker_protocol.chunk(3, b"tick 3"), worker_protocol.end(3)]


def test_a_missing_handler_is_error_502_with_the_vector_bytes(worker):
    worker.send(frame("invoke, missing task"))
    assert worker.frame() == frame("error")


def test_a_job_whose_deadline_passed_is_not_run(worker):
    worker.send(frame("invoke, past deadline"), frame("invoke"))
    assert worker.replies([9, 1]) == {9: [frame("error, deadline")], 1: [frame("chunk"), frame("end")]}


def test_an_app_error_is_error_502_and_the_worker_goes_on(worker):
    worker.send(worker_protocol.invoke(7, "fail", {}, b"zz", True), frame("invoke"))
    replies = worker.replies([7, 1])
    [error] = replies[7]
    kind, job, code, message = worker_protocol.unpack(error)
    assert (kind, job, code) == (worker_protocol.ERROR, 7, 502)
    assert "bad input: zz" in message
    assert replies[1] == [frame("chunk"), frame("end")]


def test_chunks_stream_in_order(worker):
    worker.send(worker_protocol.invoke(8, "chunks", {}, None, True))
    assert worker.frames(4) == [worker_protocol.chunk(8, b"a"), worker_protocol.chunk(8, b"b"), worker_protocol.chunk(8, b"c"),
                                worker_protocol.end(8)]


def test_unknown_messages_and_extra_elements_are_ignored(worker):
    worker.send(frame("unknown message"), frame("heartbeat"), frame("invoke, extra element"))
    assert worker.frames(2) == [worker_protocol.chunk(5, b"extra"), worker_protocol.end(5)]


def test_a_batch_of_invokes_is_answered_job_by_job(worker):
    jobs = range(10, 30)
    worker.send(*(worker_protocol.invoke(job, "echo", {}, str(job).encode(), True) for job in jobs))
    assert worker.replies(jobs) == {job: [worker_protocol.chunk(job, str(job).encode()), worker_protocol.end(job)] for job in jobs}


def test_an_idle_worker_sends_heartbeats(quick_worker):
    for _ in range(2):
        assert quick_worker.frame(timeout=3, skip_heartbeats=False) == frame("heartbeat")
        quick_worker.send(frame("heartbeat"))  # the engine is alive


def test_a_busy_handler_makes_the_worker_silent(quick_worker):
    # Heartbeats come from the loop that runs handlers: a hung handler must not look alive.
    quick_worker.send(worker_protocol.invoke(1, "hang", {}, None, True))
    quick_worker.send(frame("heartbeat"))
    assert quick_worker.becomes_quiet(1.0)  # a worker heartbeating every 0.2 s never is


def test_terminate_makes_the_worker_exit(worker):
    worker.send(frame("terminate"))
    assert worker.proc.wait(10) == 0


def test_a_worker_exits_when_the_engine_goes_silent(quick_worker):
    assert quick_worker.proc.wait(10) == 0  # after three heartbeat intervals without a word


@pytest.mark.parametrize("link", ["stream"])
def test_a_worker_exits_at_once_when_the_engine_closes_its_stream_link(worker):
    worker.link.sock.close()  # long before three heartbeat intervals (15 s) of silence
    assert worker.proc.wait(10) == 0


@pytest.mark.parametrize("link", ["stream"])
def test_a_worker_exits_when_its_stream_link_carries_bytes_that_are_not_msgpack(worker):
    worker.send(b"\xc1")
    assert worker.proc.wait(10) == 0


@pytest.mark.parametrize("link", ["stream"])
def test_a_message_cut_anywhere_between_writes_on_a_stream_link_is_applied_once_whole(worker):
    """Each write ends inside the next message: after its first byte, then in the middle of a body
    larger than a worker's read (600 kB). The answer to the write's whole message shows that the
    worker has read the cut part before the rest is sent, and kept it."""
    body = bytes(range(256)) * 2400
    second = worker_protocol.invoke(2, "echo", {}, b"x" * 300, True)
    third = worker_protocol.invoke(3, "echo", {}, body, True)
    half = len(third) // 2
    worker.send(frame("invoke") + second[:1])
    assert worker.frames(2) == [frame("chunk"), frame("end")]
    worker.send(second[1:] + third[:half])
    assert worker.frames(2) == [worker_protocol.chunk(2, b"x" * 300), worker_protocol.end(2)]
    worker.send(third[half:])
    assert worker.frames(2) == [worker_protocol.chunk(3, body), worker_protocol.end(3)]


def test_an_app_that_cannot_load_logs_why_and_exits_3(start, language, tmp_path):
    name, source = BROKEN_APPS[language]
    require_runtime(language)
    engine = start(language, app_source(language, tmp_path / "broken", source, name))
    kind, level, text = worker_protocol.unpack(engine.frame())
    assert (kind, level) == (worker_protocol.LOG, 40)
    assert text.startswith("cannot load ")
    assert engine.proc.wait(10) == 3


# -- streamed requests ---------------------------------------------------------------------------

def test_a_streamed_request_is_read_chunk_by_chunk_as_it_arrives(worker):
    worker.send(frame("invoke, streamed"))
    # Each chunk taken is credited, and answered before the next one exists: the request streams.
    assert worker.frames(2) == [frame("credit"), worker_protocol.chunk(4, b"first")]
    worker.send(frame("request chunk"))
    assert worker.frames(2) == [worker_protocol.credit(4, 6), worker_protocol.chunk(4, b"second")]
    worker.send(frame("request end"))
    assert worker.frame() == worker_protocol.end(4)


def test_the_whole_body_of_a_streamed_request(worker):
    worker.send(worker_protocol.invoke(4, "upper", {}, b"ab", False), worker_protocol.chunk(4, b"cd"))
    worker.send(worker_protocol.chunk(4, b"efg"), worker_protocol.end(4))
    assert worker.frames(5) == [worker_protocol.credit(4, 2), worker_protocol.credit(4, 2), worker_protocol.credit(4, 3),
                                worker_protocol.chunk(4, b"ABCDEFG"), worker_protocol.end(4)]


def test_a_cancelled_job_is_still_answered_once(worker):
    worker.send(frame("invoke, streamed"))
    assert worker.frames(2) == [frame("credit"), worker_protocol.chunk(4, b"first")]
    worker.send(frame("cancel"), frame("request chunk"), frame("invoke"))
    # The handler's next read fails; the job is answered with the cancel's code and message (the
    # engine drops it, and frees the job's credit), and its second chunk is never taken.
    assert worker.replies([4, 1]) == {4: [worker_protocol.error(4, 503, "app 'conformance' stopped")],
                                      1: [frame("chunk"), frame("end")]}


def test_a_cancel_for_a_whole_request_is_ignored(worker):
    worker.send(worker_protocol.invoke(1, "chunks", {}, None, True), worker_protocol.error(1, 503, "gave up"))
    assert worker.replies([1]) == {1: [worker_protocol.chunk(1, b"a"), worker_protocol.chunk(1, b"b"), worker_protocol.chunk(1, b"c"),
                                       worker_protocol.end(1)]}


SLEEPERS = {  # a handler that blocks for the milliseconds in the body, then answers
    "python": ("sleeper.py", "import time\n\ndef nap(request):\n    time.sleep(int(request.body) / 1000)\n"
                             "    return 'awake'\n"),
    "cpp": ("sleeper.cpp", "#include <cocaine/app.hpp>\n#include <chrono>\n#include <string>\n#include <thread>\n"
                           "static void nap(cocaine::Request& r, cocaine::Response& w) {\n"
                           "    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(r.body())));\n"
                           "    w.write(\"awake\");\n}\nCOCAINE_APP({\"nap\", nap})\n"),
    "perl": ("sleeper.pl", "sub nap { select(undef, undef, undef, $_[0]->body / 1000); 'awake' }\n"),
    "js": ("sleeper.js", "exports.nap = (request) => {\n"
                         "  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(request.text()));\n"
                         "  return 'awake';\n};\n"),
}


def first_of_two_naps(start, tmp_path, language: str, first_ms: bytes, *offers: bytes) -> tuple[list, float]:
    """Send a sleeper worker (after ``offers``) two naps in one batch, the second of 5 s; the
    frames of the first one's answer, and the seconds they took to come."""
    require_runtime(language)
    name, source = SLEEPERS[language]
    engine = start(language, app_source(language, tmp_path / "sleeper", source, name))
    engine.hello()
    if offers:
        engine.send(*offers)
    engine.send(worker_protocol.invoke(1, "nap", {}, first_ms, True), worker_protocol.invoke(2, "nap", {}, b"5000", True))
    started = time.monotonic()
    return engine.frames(2, timeout=4), time.monotonic() - started


@pytest.mark.parametrize("language", SLEEPERS)
def test_a_reply_does_not_wait_for_the_next_slow_job(language, start, tmp_path):
    # Runtimes batch the replies of quick jobs, but never hold one back for a slow job behind it.
    frames, took = first_of_two_naps(start, tmp_path, language, b"200")
    assert frames == [worker_protocol.chunk(1, b"awake"), worker_protocol.end(1)]
    assert took < 3


#: The runtimes whose handback watchdog also sends the answers a long job holds up (Perl's watchdog
#: is an interpreter thread that does not share the main loop's output; a JavaScript handler that
#: blocks holds its whole process).
WATCHDOG_SENDS = ("python", "cpp")


@pytest.mark.parametrize("language", WATCHDOG_SENDS)
def test_a_reply_does_not_wait_for_a_slow_job_run_after_it(language, start, tmp_path):
    # A quick job's reply waits for the rest of its batch, but once the next job has run past
    # handback-after, the watchdog sends it.
    frames, took = first_of_two_naps(start, tmp_path, language, b"0", worker_protocol.options(0.1))
    assert frames == [worker_protocol.chunk(1, b"awake"), worker_protocol.end(1)]
    assert took < 3


@pytest.mark.parametrize("language", WATCHDOG_SENDS)
def test_a_hung_handler_still_makes_the_worker_silent_once_the_replies_it_held_are_out(
        language, start, conformance_app):
    # The watchdog's sending is no sign of life beyond the replies themselves (docs/pools.md).
    require_runtime(language)
    engine = start(language, conformance_app, heartbeat=0.2)
    engine.hello()
    engine.send(worker_protocol.options(0.1))
    engine.send(frame("invoke"), worker_protocol.invoke(2, "hang", {}, None, True))
    assert engine.frames(2, timeout=4) == [frame("chunk"), frame("end")]
    engine.send(frame("heartbeat"))
    assert engine.becomes_quiet(1.0)  # a worker heartbeating every 0.2 s never is


def test_response_metadata_goes_before_the_first_chunk(worker):
    # The respond task answers with the vector's status and headers, then what the HTTP metadata says.
    worker.send(frame("invoke, http metadata"))
    assert worker.frames(3) == [frame("meta"), worker_protocol.chunk(12, b"POST /p?a=1 t 127.0.0.1:1"),
                                worker_protocol.end(12)]


def _as_chunk_and_end(frames: list[bytes]) -> list[bytes]:
    """The frames with each reply written as the chunk and end it stands for."""
    out = []
    for f in frames:
        message = worker_protocol.unpack(f)
        if message[0] == worker_protocol.REPLY:
            out += [worker_protocol.chunk(message[1], message[2]), worker_protocol.end(message[1])]
        else:
            out.append(f)
    return out


def test_once_offered_a_whole_response_is_one_reply_message(worker):
    # Every runtime takes up the offer (docs/protocol.md, "A job's reply"); without it, the tests
    # above show chunk and end.
    worker.send(frame("options, with reply"), frame("invoke"))
    assert worker.frames(1) == [frame("reply")]
    worker.send(frame("invoke, http metadata"))  # its metadata still goes first
    assert worker.frames(2) == [frame("meta"), worker_protocol.reply(12, b"POST /p?a=1 t 127.0.0.1:1")]
    # A response of several chunks streams: the chunks as they come, the last one with the end or not.
    worker.send(worker_protocol.invoke(8, "chunks", {}, None, True))
    streamed = worker.frames(3)
    if worker_protocol.unpack(streamed[-1])[0] != worker_protocol.REPLY:
        streamed += worker.frames(1)
    assert _as_chunk_and_end(streamed) == [worker_protocol.chunk(8, b"a"), worker_protocol.chunk(8, b"b"),
                                           worker_protocol.chunk(8, b"c"), worker_protocol.end(8)]
    worker.send(worker_protocol.invoke(9, "fail", {}, b"zz", True))  # an error stays an error
    [error] = worker.replies([9])[9]
    assert worker_protocol.unpack(error)[:3] == [worker_protocol.ERROR, 9, 502]


# -- responses paced by the engine's grants ----------------------------------------------------------
#: Of the runtimes that honour grants (runtimes.PACED), the runtimes that run other jobs while a response waits for credit.
INTERLEAVING = ["python", "js"]
WINDOW = worker_protocol.RESPONSE_WINDOW


@pytest.fixture
def paced_worker(start, language, conformance_app):
    """A worker with a heartbeat interval of 0.5 s: its heartbeat says it is waiting, soon enough,
    and it does not take a loaded machine's slow start for the engine's silence."""
    engine = start(language, conformance_app, heartbeat=0.5)
    engine.hello()
    return engine


def response_until_quiet(engine, job: int) -> tuple[int, bool]:
    """Bytes of ``job``'s response the worker sends before it goes idle (its first heartbeat after a
    chunk: it sends one only while no handler produces anything), and whether the response ended.
    Answers each heartbeat so that the worker knows the engine is alive."""
    size = 0
    while True:
        raw = engine.frame(skip_heartbeats=False)
        if raw == worker_protocol.HEARTBEAT_FRAME:
            engine.send(worker_protocol.HEARTBEAT_FRAME)
            if size:
                return size, False
            continue
        message = worker_protocol.unpack(raw)
        assert message[1] == job, message
        if message[0] == worker_protocol.END:
            return size, True
        assert message[0] == worker_protocol.CHUNK, message
        size += len(message[2])


@pytest.mark.parametrize("language", PACED)
def test_a_streamed_response_waits_for_the_engine_s_grants(paced_worker):
    # flood streams 64 KiB chunks as fast as it can; the worker stops once it is a window ahead.
    paced_worker.send(worker_protocol.invoke(1, "flood", {}, b"1048576", True))
    assert response_until_quiet(paced_worker, 1) == (WINDOW, False)
    paced_worker.send(worker_protocol.grant(1, 65536))  # one chunk more
    assert response_until_quiet(paced_worker, 1) == (65536, False)
    paced_worker.send(worker_protocol.grant(1, 1 << 20))
    assert response_until_quiet(paced_worker, 1) == ((1 << 20) - WINDOW - 65536, True)


@pytest.mark.parametrize("language", PACED)
def test_a_response_waiting_for_credit_is_cancelled_when_its_client_leaves(paced_worker):
    paced_worker.send(worker_protocol.invoke(1, "flood", {}, b"1048576", True))
    assert response_until_quiet(paced_worker, 1) == (WINDOW, False)
    paced_worker.send(worker_protocol.error(1, 503, "the client is gone"))
    assert paced_worker.frame() == worker_protocol.error(1, 503, "the client is gone")
    paced_worker.send(frame("invoke"))  # and the worker serves on
    assert paced_worker.frames(2) == [frame("chunk"), frame("end")]


@pytest.mark.parametrize("language", INTERLEAVING)
def test_other_jobs_run_while_a_response_waits_for_credit(paced_worker):
    paced_worker.send(worker_protocol.invoke(3, "flood", {}, b"1048576", True), frame("invoke"))
    replies = paced_worker.replies([1])  # the invoke vector's job 1 ends while job 3 waits
    assert replies[1] == [frame("chunk"), frame("end")]
    assert sum(len(worker_protocol.unpack(f)[2]) for f in replies.get(3, [])) <= WINDOW


def test_grants_for_unknown_jobs_are_ignored(worker):
    worker.send(frame("grant"), frame("grant, job 2**33"), frame("invoke"))
    assert worker.frames(2) == [frame("chunk"), frame("end")]


HANDS_BACK = ["python", "cpp", "perl"]  # the runtimes that queue jobs (docs/pools.md says why not js)


@pytest.mark.parametrize("language", HANDS_BACK)
def test_jobs_queued_behind_a_long_job_are_handed_back_once_offered(worker):
    worker.send(frame("options"), worker_protocol.invoke(1, "hang", {}, None, True),
                worker_protocol.invoke(2, "echo", {}, b"x", True), worker_protocol.invoke(3, "echo", {}, b"y", True))
    assert worker.frame() == frame("handback")
    # One that arrives while the long job still runs (sent before the engine saw it stall) goes too.
    worker.send(worker_protocol.invoke(5, "echo", {}, b"z", True))
    assert worker.frame() == worker_protocol.handback([5])


@pytest.mark.parametrize("link", ["stream"])
@pytest.mark.parametrize("language", HANDS_BACK)
def test_a_message_cut_short_on_a_stream_link_while_a_long_job_runs_is_handed_back_whole(worker):
    # The start of the invoke comes with the long job, so the loop that starts the job reads it;
    # whoever reads the link while the job runs (a Perl worker's watchdog thread) goes on from there.
    invoke = worker_protocol.invoke(5, "echo", {}, b"z", True)
    worker.send(frame("options"), worker_protocol.invoke(1, "hang", {}, None, True), invoke[:4])
    assert worker.becomes_quiet(0.3)  # past handback-after (0.1 s), with nothing to hand back yet
    worker.send(invoke[4:])
    assert worker.frame() == worker_protocol.handback([5])


@pytest.mark.parametrize("language", [lang for lang in HANDS_BACK if lang not in INTERLEAVING])
def test_jobs_queued_behind_a_response_waiting_for_credit_are_handed_back(paced_worker):
    # A job waiting for response credit is running: what waits behind it goes back, and the job
    # itself still completes once granted.
    paced_worker.send(frame("options"), worker_protocol.invoke(1, "flood", {}, b"1048576", True),
                      worker_protocol.invoke(2, "echo", {}, b"x", True), worker_protocol.invoke(3, "echo", {}, b"y", True))
    sent = 0
    while True:
        raw = paced_worker.frame(skip_heartbeats=False)
        if raw == worker_protocol.HEARTBEAT_FRAME:
            paced_worker.send(worker_protocol.HEARTBEAT_FRAME)
            continue
        if raw == frame("handback"):
            break
        message = worker_protocol.unpack(raw)
        assert message[0] == worker_protocol.CHUNK and message[1] == 1, message
        sent += len(message[2])
    assert sent <= WINDOW
    paced_worker.send(worker_protocol.grant(1, 1 << 20))
    assert sent + response_until_quiet(paced_worker, 1)[0] == 1 << 20
