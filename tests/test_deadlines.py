"""The engine's deadline bookkeeping (cocaine.core.engine.deadlines) on real jobs: the earliest
deadline first, whatever order jobs come in, and answered jobs not kept until their deadline.
tests/test_pools.py and tests/test_drivers_native.py prove the 504s end to end."""

from cocaine.core.engine.deadlines import Deadlines
from cocaine.core.engine.job import Job
from cocaine.core.engine.stats import TaskStats


class Answers:
    def __init__(self):
        self.final = []

    def chunk(self, data):
        pass

    def end(self):
        self.final.append("end")

    def error(self, code, message):
        self.final.append(code)


def job(job_id, deadline):
    made = Job(job_id, "task", b"", {}, Answers(), TaskStats(), timeout=1.0)
    made.deadline = deadline
    return made


def test_jobs_come_out_earliest_first_in_order_or_not():
    deadlines = Deadlines()
    jobs = [job(1, 10.0), job(2, 11.0), job(3, 10.5), job(4, 12.0), job(5, 9.0)]
    for each in jobs:
        deadlines.add(each)
    assert deadlines.earliest() == 9.0
    assert sorted(j.id for j in deadlines.due(10.5)) == [1, 3, 5]
    assert deadlines.earliest() == 11.0
    assert [j.id for j in deadlines.due(20.0)] == [2, 4]
    assert deadlines.earliest() is None and len(deadlines) == 0


def test_answered_jobs_leave_without_waiting_for_their_deadline():
    deadlines = Deadlines()
    for n in range(1, 10_001):
        each = job(n, 30.0 + n)  # a busy app: a request-timeout of 30 s, answered at once
        deadlines.add(each)
        each.end()
    assert len(deadlines) <= 1  # only the last one, until the next comes or the timer looks
    assert deadlines.earliest() is None and len(deadlines) == 0


def test_a_job_still_running_is_watched_behind_answered_ones():
    deadlines = Deadlines()
    slow, quick = job(1, 5.0), job(2, 6.0)
    deadlines.add(slow)
    deadlines.add(quick)
    quick.end()
    assert deadlines.earliest() == 5.0
    assert deadlines.due(5.0) == [slow]
    assert deadlines.earliest() is None
