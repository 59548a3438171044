"""The jobs whose deadline an engine watches, earliest first.

Most jobs arrive in deadline order: a task's timeout is the same for every job and jobs are
accepted one after the other. Those go on a FIFO (append and pop at the ends, no comparisons);
only a job due before the last one queued (a native client's own, shorter timeout) goes on a heap.
An answered job leaves as soon as it reaches the head, so that a busy app does not keep every job
of the last ``request-timeout`` alive (a heap of them cost a push among hundreds of thousands per
job, and the memory of each until its deadline).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocaine.core.engine.job import Job


class Deadlines:
    def __init__(self) -> None:
        self._fifo: deque[Job] = deque()  # deadlines in order
        self._heap: list = []  # (deadline, job id, job): the ones out of order

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap)

    def add(self, job: Job) -> None:
        """Watch ``job`` (its ``deadline`` is set)."""
        fifo = self._fifo
        while fifo and fifo[0].done:  # answered: nothing left to watch
            fifo.popleft()
        if not fifo or fifo[-1].deadline <= job.deadline:
            fifo.append(job)
        else:
            heapq.heappush(self._heap, (job.deadline, job.id, job))

    def due(self, now: float) -> list[Job]:
        """Take out every job whose deadline is at or before ``now`` (answered or not)."""
        due = []
        fifo, heap = self._fifo, self._heap
        while fifo and fifo[0].deadline <= now:
            due.append(fifo.popleft())
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due

    def earliest(self) -> float | None:
        """The earliest deadline of a job not answered yet (None if there is none)."""
        fifo, heap = self._fifo, self._heap
        while fifo and fifo[0].done:
            fifo.popleft()
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if fifo and heap:
            return min(fifo[0].deadline, heap[0][0])
        if fifo:
            return fifo[0].deadline
        return heap[0][0] if heap else None
