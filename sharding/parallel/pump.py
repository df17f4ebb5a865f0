"""Signature checks in chunks, handed to whichever worker is free."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from sharding.parallel.jobs import Job, JobResult, JobRunner
from sharding.parallel.plan import make_signature_jobs
from sharding.records import ShardParams
from sharding.tx import SignedTx

SIGNATURE_CHUNK = 32  # signatures per chunk (the smallest chunk when guided, ~3 ms)
# Guided self-scheduling (``guided=True``, the overlapped path): a chunk is
# 1 / (GUIDED_SHARE x workers x queue depth) of what is left, at least
# SIGNATURE_CHUNK, so chunks shrink towards the end where balance matters: 17
# frames per 2,000 signatures instead of 63. Measured (issue 16, interleaved, loaded
# machine): it saves the calling process 1-3 ms of frames per block, wall clock
# unchanged overlapped; partitioned, fixed chunks and a deep queue were faster
# (x1.12-1.26 paired), so that path keeps them.
GUIDED_SHARE = 2
QUEUE_DEPTH = 2  # chunks queued per worker otherwise: a slow worker holds little back


class SignaturePump:
    """Hands chunks of signature checks to whichever worker is free, so a worker
    that shares its core with another process simply checks fewer (measured: with
    fixed shares, one slowed worker made the whole block wait for it)."""

    def __init__(self, runner: JobRunner, params: ShardParams, txs: Sequence[SignedTx],
                 indices: Sequence[int], *, guided: bool = False) -> None:
        self.runner, self.params, self.txs = runner, params, txs
        self.guided = guided
        self.pending = indices
        self.position = 0
        self.queued: list[deque[bool]] = [deque() for _ in range(runner.workers)]  # is_exec
        self.bad: list[int] = []

    @property
    def remaining(self) -> int:
        """Signatures not handed to a worker yet."""
        return len(self.pending) - self.position

    @property
    def chunks_left(self) -> int:
        """Fixed-size chunks still to hand out."""
        return -(-self.remaining // SIGNATURE_CHUNK)

    def _submit_chunk(self, worker: int, size: int) -> None:
        chunk = self.pending[self.position : self.position + size]
        self.position += len(chunk)
        self.runner.submit_to(worker, make_signature_jobs(self.params, self.txs, [chunk])[0])
        self.queued[worker].append(False)

    def feed(self, worker: int, depth: int) -> None:
        while self.remaining and len(self.queued[worker]) < depth:
            size = SIGNATURE_CHUNK
            if self.guided:
                size = max(size, -(-self.remaining // (GUIDED_SHARE * len(self.queued) * depth)))
            self._submit_chunk(worker, size)

    def feed_all(self, depth: int) -> None:
        for worker in range(len(self.queued)):
            self.feed(worker, depth)

    def feed_share(self, share: float) -> None:
        """Queue ``share`` of all the signatures now, one chunk per worker (work
        that keeps the workers busy while this process plans or executes)."""
        size = int(len(self.pending) * share) // max(1, len(self.queued))
        if size < 1:
            return
        for worker in range(len(self.queued)):
            self._submit_chunk(worker, size)

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
