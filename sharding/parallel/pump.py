"""Signature checks in chunks, handed to whichever worker is free."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from sharding.parallel.jobs import Job, JobResult, JobRunner
from sharding.parallel.plan import make_signature_jobs
from sharding.records import ShardParams
from sharding.tx import SignedTx

SIGNATURE_CHUNK = 32  # signatures per job handed to whichever worker is free (~3 ms)
QUEUE_DEPTH = 2  # chunks queued per worker otherwise: a slow worker holds little back


class SignaturePump:
    """Hands chunks of signature checks to whichever worker is free, so a worker
    that shares its core with another process simply checks fewer (measured: with
    fixed shares, one slowed worker made the whole block wait for it)."""

    def __init__(self, runner: JobRunner, params: ShardParams, txs: Sequence[SignedTx],
                 indices: Sequence[int]) -> None:
        self.runner, self.params, self.txs = runner, params, txs
        self.chunks = deque(
            indices[i : i + SIGNATURE_CHUNK] for i in range(0, len(indices), SIGNATURE_CHUNK)
        )
        self.queued: list[deque[bool]] = [deque() for _ in range(runner.workers)]  # is_exec
        self.bad: list[int] = []

    def feed(self, worker: int, depth: int) -> None:
        while self.chunks and len(self.queued[worker]) < depth:
            chunk = self.chunks.popleft()
            self.runner.submit_to(worker, make_signature_jobs(self.params, self.txs, [chunk])[0])
            self.queued[worker].append(False)

    def feed_all(self, depth: int) -> None:
        for worker in range(len(self.queued)):
            self.feed(worker, depth)

    def add_execution(self, worker: int, job: Job) -> None:
        self.runner.submit_to(worker, job)
        self.queued[worker].append(True)

    def next_execution(self, depth: int) -> tuple[int, JobResult] | None:
        """Collect results until an execution job's comes back (None: all done)."""
        while any(self.queued):
            worker, result = self.runner.collect_any()
            is_exec = self.queued[worker].popleft()
            self.bad.extend(result.bad_signatures)
            self.feed(worker, depth)
            if is_exec:
                return worker, result
        return None

    def drain(self) -> list[int]:
        self.feed_all(QUEUE_DEPTH)
        while self.next_execution(QUEUE_DEPTH) is not None:
            pass
        return sorted(self.bad)

