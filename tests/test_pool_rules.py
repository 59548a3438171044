"""The pool's rules one by one, on a clock the test moves and workers the test speaks for
(tests/pool_doubles.py): choosing a worker, growing, backing off, dropping silent workers. Fast and
deterministic; tests/test_pools.py proves the same rules end to end with real workers."""

import pytest

from cocaine.core import worker_protocol
from cocaine.core.engine.handle import JobHandle
from cocaine.core.engine.pool import BACKOFF_FIRST, BACKOFF_MAX, HORIZON, JOB_TIME_CAP, SPARE_CPU, STALL_AFTER
from cocaine.core.errors import Code
from pool_doubles import PoolRig


@pytest.fixture
def rig(zmq_context, tmp_path):
    rigs = []

    def make(**config):
        rigs.append(PoolRig(zmq_context, str(tmp_path), **config))
        return rigs[-1]

    yield make
    for made in rigs:
        made.close()


def kinds(messages):
    return [worker_protocol.NAMES[m[0]] for m in messages]


# -- choosing a worker ---------------------------------------------------------------------------

def test_an_idle_worker_comes_first_then_the_one_with_most_free_credit(rig):
    r = rig(concurrency=4)
    one, two = r.ready_worker(), r.ready_worker()
    pool = r.pool
    for _ in range(2):
        pool.assign(r.pooled(one), r.job()[0])
    assert pool.least_loaded() is r.pooled(two)  # idle
    pool.assign(r.pooled(two), r.job()[0])
    assert pool.least_loaded() is r.pooled(two)  # 1 job against 2
    for _ in range(3):
        pool.assign(r.pooled(two), r.job()[0])
    pool.assign(r.pooled(one), r.job()[0])
    pool.assign(r.pooled(one), r.job()[0])
    assert pool.least_loaded() is None  # every worker holds `concurrency` jobs
    r.reactor.round()
    assert kinds(one.received()) == ["invoke"] * 4  # one batch per round, in order


def test_a_worker_that_has_not_said_hello_gets_nothing(rig):
    r = rig()
    assert r.pool.spawn()
    assert r.pool.starting() == 1
    assert r.pool.least_loaded() is None
    r.backend.workers[0].hello()
    r.reactor.round()
    assert r.pool.least_loaded() is r.pooled(r.backend.workers[0])
    assert r.listener.kinds() == ["spawned", "ready", "capacity"]


def fill(pool, rig, waiting):
    """Dispatch as the engine does, from a queue of ``waiting`` jobs: each worker chosen, in order."""
    chosen = []
    while waiting and (worker := pool.least_loaded(waiting)) is not None:
        pool.assign(worker, rig.job()[0])
        chosen.append(worker)
        waiting -= 1
    return chosen


def test_while_workers_start_a_ready_one_takes_only_its_share_of_a_burst(rig):
    r = rig(pool_limit=4, concurrency=8)
    r.pool.grow(20)  # a burst of 20 jobs on a cold pool: its 4 workers start together
    assert r.pool.starting() == 4
    workers = r.backend.workers
    waiting = 20
    for n, worker in enumerate(workers, 1):
        worker.hello()
        r.reactor.round()
        assert r.pool.starting() == 4 - n
        chosen = fill(r.pool, r, waiting)
        # 5 each, as if all 4 were ready (not 8, 8, 4 and nothing for the last to say hello)
        assert chosen == [r.pooled(worker)] * 5
        waiting -= len(chosen)
    assert waiting == 0


def test_a_share_counts_the_jobs_the_ready_workers_hold_and_needs_no_start(rig):
    r = rig(pool_limit=3, concurrency=8)
    first = r.ready_worker()
    for _ in range(6):  # taken straight away while the queue was empty: nobody was starting
        r.pool.assign(r.pooled(first), r.job()[0])
    r.pool.grow(6)
    assert r.pool.starting() == 2
    # 6 held + 6 waiting over 3 workers: 4 each, and the first already holds more
    assert r.pool.least_loaded(6) is None
    second = r.backend.workers[1]
    second.hello()
    r.reactor.round()
    assert fill(r.pool, r, 6) == [r.pooled(second)] * 4
    # every worker ready: the full credit again
    r.backend.workers[2].hello()
    r.reactor.round()
    assert r.pool.least_loaded(2) is r.pooled(r.backend.workers[2])
    assert len(fill(r.pool, r, 100)) == 8 + 2 + 4  # up to concurrency (8) each


def test_a_worker_that_fails_to_start_no_longer_counts_as_starting(rig):
    r = rig(pool_limit=2, concurrency=8)
    r.pool.grow(10)
    ready, failing = r.backend.workers
    ready.hello()
    r.reactor.round()
    assert len(fill(r.pool, r, 10)) == 5
    r.reactor.round()
    for message in ready.received():  # it answers its five
        if message[0] == worker_protocol.INVOKE:
            ready.send(worker_protocol.reply(message[1], b""))
    r.reactor.round()  # at once: quick jobs, so its credit stays whole
    failing.exit(1)
    r.reactor.advance(1)  # the pool's check sees the exit
    assert r.pool.starting() == 0 and r.pool.total == 1
    assert len(fill(r.pool, r, 10)) == 8  # its whole credit: nobody else is coming


def test_a_hello_late_or_twice_does_not_miscount_the_workers_starting(rig):
    r = rig(pool_limit=2)
    r.pool.grow(2)
    late, twice = r.backend.workers
    twice.hello()
    r.reactor.round()
    twice.hello()  # a confused worker says it again
    r.reactor.round()
    assert r.pool.starting() == 1
    r.pool.ask_to_exit(r.pooled(late), "idle")  # the other one is let go before its hello
    assert r.pool.starting() == 0
    late.hello()  # which comes after all
    r.reactor.round()
    assert r.pool.starting() == 0
    assert r.pool.least_loaded(5) is r.pooled(twice)  # the whole credit: nobody is coming


def test_a_worker_stuck_on_a_long_job_gets_no_more(rig):
    r = rig(concurrency=8)
    stuck = r.ready_worker()
    r.pool.assign(r.pooled(stuck), r.job()[0])
    assert r.pool.least_loaded() is r.pooled(stuck)  # its job may yet be short
    r.clock.now += STALL_AFTER * 1.5
    assert r.pool.least_loaded() is None
    assert r.pool.stalled() == 1
    other = r.ready_worker()
    r.pool.assign(r.pooled(other), r.job()[0])
    assert r.pool.least_loaded() is r.pooled(other)  # a fresh job is no reason to hold back


def test_a_worker_that_keeps_answering_is_not_stuck_however_long_its_jobs_waited_there(rig):
    # Jobs sent together run one after the other: the oldest one held may have been sent long ago
    # and have started only at the worker's last answer. (A language whose credit is not set by the
    # job time: these answers would make it 1, and this test is about the stall, not the credit.)
    r = rig(concurrency=8, concurrent=True)
    worker = r.ready_worker()
    for _ in range(8):
        r.pool.assign(r.pooled(worker), r.job()[0])
    r.reactor.round()
    invokes = [m for m in worker.received() if m[0] == worker_protocol.INVOKE]
    r.clock.now += STALL_AFTER * 1.5  # six of them ran, one after the other
    worker.send(*(worker_protocol.reply(m[1], b"") for m in invokes[:6]))
    r.reactor.round()
    assert r.pool.stalled() == 0
    assert r.pool.least_loaded() is r.pooled(worker)  # its seventh job started at that answer
    r.clock.now += STALL_AFTER * 1.5  # and has run past the threshold since
    assert r.pool.stalled() == 1
    assert r.pool.least_loaded() is None
    worker.send(worker_protocol.end(invokes[6][1]))  # an end is an answer too
    r.reactor.round()
    assert r.pool.stalled() == 0
    r.clock.now += STALL_AFTER * 1.5
    worker.send(worker_protocol.chunk(invokes[7][1], b"part"))  # a chunk is not: the job still runs
    r.reactor.round()
    assert r.pool.stalled() == 1


def answer_all(r, worker, after=0.0):
    """The worker answers every job it was sent, ``after`` seconds from now; the pool reads them."""
    r.reactor.round()
    invokes = [m for m in worker.received() if m[0] == worker_protocol.INVOKE]
    r.clock.now += after
    worker.send(*(worker_protocol.reply(m[1], b"") for m in invokes))
    r.reactor.round()


def test_slow_jobs_make_a_workers_credit_shallow_and_quick_ones_deep_again(rig):
    r = rig(concurrency=8)
    worker = r.ready_worker()
    assert r.pool.credit == 8  # nothing measured yet
    for _ in range(4):
        r.pool.assign(r.pooled(worker), r.job()[0])
    answer_all(r, worker, after=4 * HORIZON / 2)  # four jobs of half the horizon, one after the other
    assert r.pool.job_time == pytest.approx(HORIZON / 2)
    assert r.pool.credit == 2  # what it finishes within the horizon
    assert r.pool.held_back() == 6  # the rest of `concurrency` may wait in the engine's queue instead
    assert fill(r.pool, r, 10) == [r.pooled(worker)] * 2
    batches = 0
    while r.pool.credit < 8:  # quick answers: each batch pulls the job time down
        answer_all(r, worker)
        fill(r.pool, r, 10)
        batches += 1
        assert batches <= 8, f"credit still {r.pool.credit} after {batches} quick batches"
    assert r.pool.held_back() == 0


def test_a_language_that_runs_jobs_concurrently_keeps_its_whole_credit(rig):
    # A JavaScript worker holding 8 jobs that each await 50 ms answers all 8 after 50 ms; with
    # fewer jobs it would answer fewer, not faster: its rate is no job time.
    r = rig(concurrency=8, concurrent=True)
    worker = r.ready_worker()
    for _ in range(8):
        r.pool.assign(r.pooled(worker), r.job()[0])
    answer_all(r, worker, after=5 * JOB_TIME_CAP)
    assert r.pool.credit == 8 and r.pool.job_time is None


def test_a_streamed_request_does_not_count_in_the_job_time(rig):
    # A raw socket server's connection is one job whose request streams for as long as its client
    # stays: that time is the client's. Counted, it would leave a worker that holds one connection
    # no room for the next when another ends.
    r = rig(concurrency=8)
    worker = r.ready_worker()
    for _ in range(2):
        job, _ = r.job()
        JobHandle(job, lambda job: None, stream=True, on_credit=None)
        r.pool.assign(r.pooled(worker), job)
    answer_all(r, worker, after=5 * JOB_TIME_CAP)
    assert r.pool.job_time is None and r.pool.credit == 8


def test_one_very_long_answer_counts_as_capped(rig):
    r = rig(concurrency=8)
    worker = r.ready_worker()
    r.pool.assign(r.pooled(worker), r.job()[0])
    answer_all(r, worker, after=5 * JOB_TIME_CAP)  # a stream that lasted long
    assert r.pool.job_time == JOB_TIME_CAP and r.pool.credit == 1
    batches = 0
    while r.pool.credit < 8:
        r.pool.assign(r.pooled(worker), r.job()[0])
        answer_all(r, worker)
        batches += 1
    assert batches <= 20  # some quick answers (200 ms down to 1.25 ms at 1/4 a step), not hundreds


@pytest.mark.parametrize("answer", ["chunk and end", "reply"])
def test_an_answer_frees_credit(rig, answer):
    r = rig(concurrency=1)
    worker = r.ready_worker()
    job, answers = r.job()
    r.pool.assign(r.pooled(worker), job)
    assert r.pool.least_loaded() is None
    r.reactor.round()
    [invoke] = worker.received()
    if answer == "reply":  # the whole response in one message: the same answer
        worker.send(worker_protocol.reply(invoke[1], b"reply"))
    else:
        worker.send(worker_protocol.chunk(invoke[1], b"reply"), worker_protocol.end(invoke[1]))
    r.reactor.round()
    assert answers.chunks == [b"reply"] and answers.final == ("end",)
    assert r.listener.events[-1] == ("capacity",)
    assert r.pool.least_loaded() is r.pooled(worker)


# -- growing -------------------------------------------------------------------------------------

def test_the_first_worker_starts_at_once_then_one_per_grow_threshold(rig):
    r = rig(pool_limit=4, grow_threshold=3)
    r.pool.grow(1)
    assert r.pool.total == 1  # the first one, for a single job
    r.pool.grow(5)
    assert r.pool.total == 1  # 5 waiting < 3 x (1 starting + 1)
    r.pool.grow(6)
    assert r.pool.total == 2
    r.pool.grow(1000)
    assert r.pool.total == 4  # pool-limit
    assert r.backend.attempts == 4


def test_workers_already_ready_do_not_count_as_starting(rig):
    r = rig(pool_limit=4, grow_threshold=2)
    r.ready_worker()
    r.pool.grow(2)
    assert r.pool.total == 2  # 2 waiting >= 2 x (0 starting + 1)


def quick_jobs(r, worker, jobs=8, each=HORIZON / 100):
    """The worker runs ``jobs`` jobs of ``each`` seconds: the pool learns its job time."""
    for _ in range(jobs):
        r.pool.assign(r.pooled(worker), r.job()[0])
    answer_all(r, worker, after=jobs * each)


def test_quick_jobs_wait_for_the_workers_the_work_needs_rather_than_start_more(rig):
    r = rig(pool_limit=4, concurrency=8)
    worker = r.ready_worker()
    quick_jobs(r, worker)  # jobs of 1% of the horizon
    assert r.pool.credit == 8 and r.pool.target == 1
    assert fill(r.pool, r, 20) == [r.pooled(worker)] * 8
    r.listener.waiting = 12
    r.pool.grow(12)  # 20 jobs of 0.1 ms: one worker finishes them within the horizon
    assert r.pool.total == 1 and r.pool.target == 1
    r.pool.grow(100)  # 108 of them would take it longer: a second worker
    assert r.pool.total == 2 and r.pool.target == 2


def test_slow_jobs_still_start_a_worker_each(rig):
    r = rig(pool_limit=4, concurrency=8)
    worker = r.ready_worker()
    quick_jobs(r, worker, jobs=1, each=HORIZON * 5)
    assert r.pool.credit == 1
    fill(r.pool, r, 4)
    r.pool.grow(3)
    assert r.pool.total == 4  # as many as jobs, within pool-limit
    assert r.pool.target >= 4


def test_workers_beyond_the_target_get_no_jobs_and_retire_when_idle(rig):
    # A cold burst starts workers before the job time is known; once it is, the work may need fewer.
    r = rig(pool_limit=4, concurrency=8, idle_timeout=5.0, heartbeat_timeout=300.0)
    first, second = r.ready_worker(), r.ready_worker()
    assert fill(r.pool, r, 2) == [r.pooled(first), r.pooled(second)]  # job time unknown: idle ones first
    r.reactor.round()
    for worker in (first, second):
        worker.send(*(worker_protocol.reply(m[1], b"") for m in worker.received() if m[0] == worker_protocol.INVOKE))
    r.reactor.round()
    quick_jobs(r, first)
    assert r.pool.target == 1
    assert fill(r.pool, r, 20) == [r.pooled(first)] * 8  # the second idles, although it has room
    assert r.pool.held_back() == 8  # what it would have held may wait beyond queue-limit
    r.reactor.advance(6)
    assert r.pooled(second).exit_reason == "idle" and r.pool.total == 1


def test_a_stalled_worker_within_the_target_does_not_keep_jobs_from_the_others(rig):
    r = rig(pool_limit=4, concurrency=8)
    first, second = r.ready_worker(), r.ready_worker()
    quick_jobs(r, first)
    assert r.pool.target == 1
    r.pool.assign(r.pooled(first), r.job()[0])
    r.clock.now += STALL_AFTER * 1.5  # its job hangs
    assert r.pool.least_loaded() is r.pooled(second)


def test_a_worker_whose_job_outlasts_the_horizon_is_not_counted_in_the_target(rig):
    # Quick jobs became slow: the job time learns it only from their answers, so a job that has
    # already run longer than the horizon says enough.
    r = rig(pool_limit=4, concurrency=8)
    worker = r.ready_worker()
    quick_jobs(r, worker)
    fill(r.pool, r, 8)
    r.pool.grow(2)
    assert r.pool.total == 1 and r.pool.target == 1
    r.clock.now += HORIZON * 1.5
    r.pool.grow(2)
    assert r.pool.total == 2 and r.pool.target == 2  # one for the 2 jobs waiting, besides it


def test_a_job_that_waited_longer_than_the_horizon_lets_the_pool_grow_past_the_target(rig):
    # The job time of an app whose tasks differ is an average: its target may be too low.
    r = rig(pool_limit=4, concurrency=8)
    worker = r.ready_worker()
    quick_jobs(r, worker)
    fill(r.pool, r, 8)
    assert r.pool.grow(2) is True  # held back: the engine asks again later
    assert r.pool.total == 1
    assert r.pool.grow(2, waited=HORIZON) is False
    assert r.pool.total == 3 and r.pool.target is None


def test_in_a_full_pool_a_job_that_waited_past_the_horizon_goes_to_a_worker_beyond_the_target(rig):
    # The target's workers may all be busy with jobs longer than the job time said.
    r = rig(pool_limit=2, concurrency=8)
    first, second = r.ready_worker(), r.ready_worker()
    quick_jobs(r, first)
    assert r.pool.target == 1
    assert fill(r.pool, r, 9) == [r.pooled(first)] * 8
    assert r.pool.grow(1) is True  # held back: the engine asks again
    assert r.pool.least_loaded(1) is None
    assert r.pool.grow(1, waited=HORIZON) is False
    assert r.pool.target is None and r.pool.least_loaded(1) is r.pooled(second)


def test_warm_workers_all_take_jobs_whatever_the_target(rig):
    r = rig(pool_min=2, pool_limit=4, concurrency=8)
    r.reactor.round()
    for worker in r.backend.workers:
        worker.hello()
    r.reactor.round()
    first, second = r.backend.workers
    quick_jobs(r, first)
    assert r.pool.target == 2  # pool-min: the work alone needs one
    assert fill(r.pool, r, 2) == [r.pooled(first), r.pooled(second)]


def test_with_a_core_to_spare_the_pool_grows_as_jobs_wait_whatever_the_job_time(rig):
    # Another worker takes nothing from the busy ones then: it adds throughput.
    r = rig(pool_limit=4, concurrency=8)
    worker = r.ready_worker()
    quick_jobs(r, worker)
    assert r.pool.target == 1
    r.idle_cores = SPARE_CPU
    fill(r.pool, r, 8)
    r.pool.grow(12)
    assert r.pool.total == 4 and r.pool.target is None
    for started in r.backend.workers[1:]:
        started.hello()
    r.reactor.round()
    assert len(set(fill(r.pool, r, 12))) == 3  # the new workers take the jobs waiting


def test_with_a_core_to_spare_a_job_for_a_busy_worker_starts_one_more(rig):
    # A deep credit would otherwise keep quick jobs on few workers while cores idle.
    r = rig(pool_limit=4, concurrency=8)
    worker = r.ready_worker()
    quick_jobs(r, worker)
    fill(r.pool, r, 1)
    r.pool.all_busy()
    assert r.pool.total == 1  # no core to spare
    r.idle_cores = SPARE_CPU
    r.pool.all_busy()
    r.pool.all_busy()
    assert r.pool.total == 2  # one at a time: none while one starts
    r.backend.workers[-1].hello()
    r.reactor.round()
    r.pool.all_busy()
    assert r.pool.total == 3


def test_pool_min_workers_are_started_by_the_check_and_kept(rig):
    r = rig(pool_min=2, pool_limit=4, idle_timeout=5.0)
    r.reactor.round()
    assert r.pool.total == 2
    for worker in r.backend.workers:
        worker.hello()
    r.reactor.advance(10)
    assert r.pool.total == 2 and not r.pool.exiting


def test_an_idle_worker_above_pool_min_is_asked_to_exit(rig):
    r = rig(pool_min=1, pool_limit=4, idle_timeout=5.0, heartbeat_timeout=300.0)
    r.reactor.round()
    r.backend.workers[0].hello()
    r.ready_worker()
    r.reactor.advance(4)
    assert r.pool.total == 2
    r.reactor.advance(2)
    assert r.pool.total == 1  # one of the two, never both: pool-min
    [spare] = [w for w in r.backend.workers if r.pooled(w) in r.pool.exiting.values()]
    assert [k for k in kinds(spare.received()) if k not in ("heartbeat", "options")] == ["terminate"]
    assert r.pooled(spare).exit_reason == "idle"
    spare.exit(0)
    r.reactor.advance(1)
    assert ("exited", spare.id, "idle") in r.listener.events
    r.reactor.advance(10)
    assert r.pool.total == 1



def test_an_idle_worker_retires_although_it_heartbeats(rig):
    # A worker sends a heartbeat whenever it has been silent for an interval (1 s here): that is not
    # work, so it must not restart its idle time (5 s), or idle workers would never retire.
    r = rig(pool_min=1, pool_limit=4, idle_timeout=5.0, heartbeat_timeout=3.0)
    r.reactor.round()
    r.backend.workers[0].hello()
    r.ready_worker()
    for _ in range(8):
        for worker in r.backend.workers:
            worker.heartbeat()
        r.reactor.advance(1)
    assert r.pool.total == 1
    [spare] = [w for w in r.backend.workers if r.pooled(w) in r.pool.exiting.values()]
    assert r.pooled(spare).exit_reason == "idle"


def test_a_burst_asks_for_its_workers_at_once_and_each_is_announced_when_its_start_is_known(rig):
    r = rig(pool_limit=3)
    r.backend.late = True  # a fork server's handles: the pid comes later
    r.pool.grow(3)
    assert r.backend.attempts == 3 and r.pool.starting() == 3
    r.reactor.round()
    assert r.listener.kinds() == []  # nothing known yet, nothing announced
    one, two, _ = r.backend.workers
    one.handle.answer(101)
    r.reactor.round()
    assert r.listener.events == [("spawned", one.id)] and r.pooled(one).handle.pid == 101
    # A hello read before its answer (in the same round): the pid is taken first, so "spawned"
    # comes before "ready".
    two.handle.answer(102)
    two.hello()
    r.reactor.round()
    assert r.listener.events[1:] == [("spawned", two.id), ("ready", two.id), ("capacity",)]
    assert r.pool.starting() == 2  # the first (no hello yet) and the third (no answer yet)


def test_a_worker_its_backend_could_not_start_after_all_is_replaced_at_once(rig):
    r = rig(pool_limit=1)
    r.backend.late = True
    r.pool.grow(1)
    r.backend.workers[0].handle.answer("could not be forked: the fork server exited before it answered")
    r.reactor.round()
    # It never ran: no failed start (no backoff), no exit; another is asked for in its place.
    assert r.backend.attempts == 2 and r.pool.total == r.pool.starting() == 1
    assert r.listener.kinds() == [] and not r.pool.backing_off()
    replacement = r.backend.workers[1]
    replacement.handle.answer(103)
    replacement.hello()
    r.reactor.round()
    assert r.listener.kinds() == ["spawned", "ready", "capacity"]


# -- backing off -----------------------------------------------------------------------------------

def test_failed_starts_back_off_exponentially_up_to_a_cap(rig):
    r = rig()
    r.backend.failing = True
    delays = []
    for _ in range(9):
        r.pool.grow(1)
        attempts = r.backend.attempts
        assert r.pool.backing_off()
        r.pool.grow(1)
        assert r.backend.attempts == attempts  # no attempt while backing off
        delays.append(r.listener.events[-1][3])
        r.clock.now = r.pool.retry_at
    assert delays == [min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** n) for n in range(9)]
    assert delays[-1] == BACKOFF_MAX
    assert r.listener.events[-1][:3] == ("start-failed", "cannot start a worker: no room for a worker", 9)


def test_a_worker_that_starts_ends_the_backoff(rig):
    r = rig()
    r.backend.failing = True
    r.pool.grow(1)
    r.pool.grow(1)
    r.clock.now = r.pool.retry_at
    r.backend.failing = False
    r.pool.grow(1)
    assert r.pool.broken_reason is not None  # until it says hello
    r.backend.workers[0].hello()
    r.reactor.round()
    assert r.pool.broken_reason is None and r.pool.failed_in_a_row == 0 and not r.pool.backing_off()


def test_a_worker_that_never_says_hello_fails_its_start(rig):
    r = rig(startup_timeout=3.0)
    r.pool.grow(1)
    r.reactor.advance(2.5)
    assert r.pool.total == 1
    r.reactor.advance(1)
    assert r.pool.total == 0
    [failure] = [e for e in r.listener.events if e[0] == "start-failed"]
    assert failure[1:3] == ("worker did not say hello within startup-timeout (3 s) before it was ready", 1)
    assert r.pool.backing_off()


# -- dropping silent workers -----------------------------------------------------------------------

def test_a_silent_worker_is_dropped_and_its_jobs_fail_with_504(rig):
    r = rig(heartbeat_timeout=3.0)
    silent, talking = r.ready_worker(), r.ready_worker()
    job, answers = r.job()
    r.pool.assign(r.pooled(silent), job)
    for _ in range(7):
        talking.heartbeat()
        r.reactor.advance(0.5)
    assert r.pooled(silent) is not None and answers.final is None  # 3 s silent, not more
    talking.heartbeat()
    r.reactor.advance(0.75)
    assert answers.final == ("error", Code.TIMEOUT, "worker did not answer within heartbeat-timeout (3 s)")
    assert silent.identity not in r.pool.workers
    assert silent.handle.code == -9  # killed
    assert r.pooled(talking) in r.pool.workers.values()
    r.reactor.round()
    assert ("exited", silent.id, "heartbeat-timeout") in r.listener.events


def test_the_pool_sends_heartbeats_to_idle_workers(rig):
    r = rig(heartbeat_timeout=3.0)  # heartbeats every second
    worker = r.ready_worker()
    r.reactor.advance(3)
    assert kinds(worker.received()).count("heartbeat") >= 2


def test_a_worker_that_exits_is_forgotten_and_its_jobs_fail(rig):
    r = rig()
    worker = r.ready_worker()
    job, answers = r.job()
    r.pool.assign(r.pooled(worker), job)
    worker.exit(3)
    r.reactor.advance(1)
    assert answers.final == ("error", Code.SERVER, "worker exited with status 3")
    assert r.pool.total == 0 and not r.pool.exiting
    assert ("exited", worker.id, "crash") in r.listener.events


# -- jobs handed back ----------------------------------------------------------------------------

def test_a_worker_is_offered_handback_right_after_its_hello_before_any_job(rig):
    r = rig()
    assert r.pool.spawn()
    worker = r.backend.workers[0]
    worker.hello()
    r.reactor.round()
    r.pool.assign(r.pooled(worker), r.job()[0])
    r.reactor.round()
    assert worker.received()[:2] == [[worker_protocol.OPTIONS, {"handback-after": STALL_AFTER, "reply": True}],
                                     worker_protocol.unpack(worker_protocol.invoke(1, "task", {}, b"body", True))]


def test_jobs_handed_back_leave_the_worker_and_go_back_in_their_order(rig):
    r = rig(concurrency=8)
    worker = r.ready_worker()
    jobs = [r.job() for _ in range(4)]
    for job, _ in jobs:
        r.pool.assign(r.pooled(worker), job)
    r.reactor.round()
    worker.send(worker_protocol.handback([3, 2, 99]))  # 99: not this worker's: ignored
    r.reactor.round()
    assert r.listener.events[-2:] == [("handed-back", [3, 2]), ("capacity",)]
    assert list(r.pooled(worker).jobs) == [1, 4]
    assert all(job.worker is None and answers.final is None for job, answers in jobs[1:3])


def running_and_queued(r):
    """A ready worker given two jobs: the one it runs, and one queued behind it (job 2)."""
    worker = r.ready_worker()
    jobs = r.job(), r.job()
    for job, _ in jobs:
        r.pool.assign(r.pooled(worker), job)
    return worker, jobs


def test_a_job_answered_while_on_the_worker_is_not_handed_back_twice(rig):
    r = rig()
    worker, (_, (expired, answers)) = running_and_queued(r)
    expired.fail(Code.TIMEOUT, "deadline exceeded")  # what the engine does when a deadline passes
    worker.send(worker_protocol.handback([2]))
    r.reactor.round()
    assert ("handed-back", [2]) not in r.listener.events
    assert list(r.pooled(worker).jobs) == [1]  # its credit is free
    assert answers.final == ("error", Code.TIMEOUT, "deadline exceeded")


def test_a_handback_is_no_sign_of_life(rig):
    # A watchdog thread sends it while a handler may hang: the heartbeat timeout must still apply.
    r = rig(heartbeat_timeout=3.0)
    worker = r.ready_worker()
    job, answers = r.job()
    r.pool.assign(r.pooled(worker), job)
    r.clock.now += 2.0
    worker.send(worker_protocol.handback([]))
    r.reactor.round()
    r.clock.now += 1.5
    r.reactor.advance(1.0)
    assert answers.final is not None and answers.final[1] == Code.TIMEOUT


def test_a_worker_that_dies_after_a_handback_fails_only_the_jobs_it_kept(rig):
    r = rig()
    worker, ((_, running_answers), (_, queued_answers)) = running_and_queued(r)
    worker.send(worker_protocol.handback([2]))
    r.reactor.round()
    worker.exit(3)
    r.reactor.advance(1)
    assert running_answers.final == ("error", Code.SERVER, "worker exited with status 3")
    assert queued_answers.final is None  # the engine's again: it runs elsewhere, once
    assert ("handed-back", [2]) in r.listener.events
