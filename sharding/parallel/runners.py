"""A ``JobRunner`` in this process: tests, and a reference for the process pool
(``node.executor_pool``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from sharding.parallel.jobs import Job, JobResult
from sharding.parallel.worker import run_job


class InlineRunner:
    """``workers`` workers' queues, run one after another in this process
    (``collect_any`` takes the queues in turn)."""

    def __init__(self, workers: int = 1) -> None:
        self._queues: list[deque[Job]] = [deque() for _ in range(workers)]
        self._turn = 0

    @property
    def workers(self) -> int:
        return len(self._queues)

    def submit(self, jobs: Sequence[Job]) -> None:
        for k, job in enumerate(jobs):
            self.submit_to(k, job)

    def submit_to(self, worker: int, job: Job) -> None:
        self._queues[worker].append(job)

    def collect(self, count: int) -> list[JobResult]:
        return [run_job(queue.popleft()) for queue in self._queues[:count]]

    def collect_any(self) -> tuple[int, JobResult]:
        for step in range(len(self._queues)):
            k = (self._turn + step) % len(self._queues)
            if self._queues[k]:
                self._turn = k + 1
                return k, run_job(self._queues[k].popleft())
        raise ValueError("nothing submitted")

    def reset(self) -> None:
        for queue in self._queues:
            queue.clear()
