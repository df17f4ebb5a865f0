"""The executor's worker processes: a ``JobRunner`` for ``sharding.parallel``.

Why processes: CPython 3.11 threads do not run Python (execution) in parallel;
Ed25519 verification in ``cryptography`` does release the GIL (docs/EXECUTOR.md),
but it rides along in the same jobs so one scheduler balances both. The pool
lives as long as the node: its processes start once, each with one pipe pair;
jobs go to a worker as length-prefixed msgpack and a reader thread per worker
queues the answers. A worker that dies is restarted and the round fails with
``RunnerFailed``, on which the executor runs the block with the spec instead.
``AdaptiveExecutor`` is the node's executor: it runs the spec while the spec is
measured faster on this machine.
"""

from __future__ import annotations

import contextlib
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import msgspec

from sharding.block import Block
from sharding.executor import BlockResult, Rejected
from sharding.parallel import (
    PARALLEL_TXS_MIN,
    ExecutionStats,
    InlineRunner,
    Job,
    JobResult,
    JobRunner,
    ParallelExecutor,
    RunnerFailed,
    StatsSink,
    run_job,
)
from sharding.receipts import Receipt
from sharding.state import State
from sharding.tx import SignedTx

_T = TypeVar("_T")

_READY = b"ready"


def available_cores() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota
    (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota + 0.999)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def resolve_workers(configured: int) -> int:
    """``[executor] workers``: 0 means every available core."""
    return configured if configured > 0 else available_cores()


_LENGTH = struct.Struct(">I")


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def worker_main() -> None:
    """A worker process: read job frames from stdin, write results to stdout.

    A thread reads the frames as they come, so the node can queue several jobs
    (a pipelined round) without both sides blocking on full pipes.
    """
    decoder = msgspec.msgpack.Decoder(Job)
    encoder = msgspec.msgpack.Encoder()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    # The reader thread needs the GIL after every pipe read. Measured: with the
    # default 5 ms switch interval, queuing a job behind a busy worker blocked the
    # node for 14-28 ms; with 0.2 ms, for 0.3-0.6 ms.
    sys.setswitchinterval(0.0002)

    def read_frames() -> None:
        while True:
            data = _read_frame(stdin)
            frames.put(data)
            if data is None:
                return

    threading.Thread(target=read_frames, daemon=True).start()
    _write_frame(stdout, _READY)
    while True:
        data = frames.get()
        if data is None:
            return
        _write_frame(stdout, encoder.encode(run_job(decoder.decode(data))))


class _Worker:
    """One worker process; a reader thread hands its result frames to ``inbox``."""

    __slots__ = ("process",)

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from node.executor_pool import worker_main; worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )

    def start_reader(self, slot: int, generation: int, inbox: _Inbox) -> None:
        stdout = self.process.stdout

        def read() -> None:
            while True:
                data = None if stdout is None else _read_frame(stdout)
                inbox.put((slot, generation, data))
                if data is None:
                    return

        threading.Thread(target=read, daemon=True, name=f"executor-reader-{slot}").start()

    def send(self, data: bytes) -> None:
        stdin = self.process.stdin
        if stdin is None:
            raise OSError("worker has no stdin")
        _write_frame(stdin, data)

    def receive(self) -> bytes:
        stdout = self.process.stdout
        data = None if stdout is None else _read_frame(stdout)
        if data is None:
            raise EOFError("executor worker closed its pipe")
        return data

    def stop(self) -> None:
        stdin = self.process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


_Inbox = queue.SimpleQueue[tuple[int, int, bytes | None]]
COLLECT_TIMEOUT_S = 120.0  # a 10,000-transaction block takes a few seconds at worst


class ProcessRunner:
    """``workers`` persistent worker processes, each on its own stdin/stdout pipe.

    Workers are plain ``python -c`` subprocesses rather than ``multiprocessing``
    children: no fork of a threaded node, and no re-import of the caller's
    ``__main__`` (which ``spawn`` does, breaking scripts without a main guard).
    One reader thread per worker queues its results, so the executor can take
    whichever worker finishes first (dynamic signature chunks) and no pipe fills.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a process runner needs at least one worker")
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(JobResult)
        self._lock = threading.RLock()
        self._closed = False
        self._inbox: _Inbox = queue.SimpleQueue()
        self._workers = [_Worker() for _ in range(workers)]
        self._generations = [0] * workers
        self._outstanding = [0] * workers
        self._stash: list[deque[bytes]] = [deque() for _ in range(workers)]
        try:
            for k, worker in enumerate(self._workers):
                self._await_ready(worker)
                worker.start_reader(k, 0, self._inbox)
        except RunnerFailed:
            self.close()
            raise

    @staticmethod
    def _await_ready(worker: _Worker) -> None:
        try:
            ready = worker.receive()
        except (EOFError, OSError):
            ready = b""
        if ready != _READY:
            raise RunnerFailed("executor worker did not start")

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def submit(self, jobs: Sequence[Job]) -> None:
        if len(jobs) > len(self._workers):
            raise ValueError(f"{len(jobs)} jobs for {len(self._workers)} workers")
        for k, job in enumerate(jobs):
            self.submit_to(k, job)

    def submit_to(self, k: int, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RunnerFailed("executor pool is closed")
            try:
                self._workers[k].send(self._encoder.encode(job))
            except OSError:
                self._fail(k)
            self._outstanding[k] += 1

    def _next_frame(self) -> tuple[int, bytes]:
        while True:
            try:
                k, generation, data = self._inbox.get(timeout=COLLECT_TIMEOUT_S)
            except queue.Empty:
                # A hung worker must not hang the node: replace every busy one.
                for busy, outstanding in enumerate(self._outstanding):
                    if outstanding:
                        self._restart(busy)
                raise RunnerFailed("executor workers timed out") from None
            if generation != self._generations[k]:
                continue  # from a worker replaced since
            if data is None:
                self._fail(k)
            return k, data

    def collect(self, count: int) -> list[JobResult]:
        with self._lock:
            results: list[JobResult] = []
            for k in range(count):
                if self._outstanding[k] < 1:
                    raise ValueError(f"nothing submitted to worker {k}")
                while not self._stash[k]:
                    other, data = self._next_frame()
                    self._stash[other].append(data)
                self._outstanding[k] -= 1
                results.append(self._decoder.decode(self._stash[k].popleft()))
            return results

    def collect_any(self) -> tuple[int, JobResult]:
        with self._lock:
            if not any(self._outstanding):
                raise ValueError("nothing submitted")
            k = next((k for k, stash in enumerate(self._stash) if stash), -1)
            if k < 0:
                k, data = self._next_frame()
                self._stash[k].append(data)
            self._outstanding[k] -= 1
            return k, self._decoder.decode(self._stash[k].popleft())

    def reset(self) -> None:
        """Wait for and drop the results still queued (after an error mid-round)."""
        with self._lock:
            for k, stash in enumerate(self._stash):
                self._outstanding[k] -= len(stash)
                stash.clear()
            while any(self._outstanding):
                try:
                    k, _ = self._next_frame()
                except RunnerFailed:
                    continue  # the failed worker was replaced: nothing outstanding there
                self._outstanding[k] -= 1

    def _fail(self, k: int) -> NoReturn:
        self._restart(k)
        raise RunnerFailed(f"executor worker {k} failed")

    def _restart(self, k: int) -> None:
        old = self._workers[k]
        old.process.kill()
        old.stop()
        self._generations[k] += 1
        self._outstanding[k] = 0
        self._stash[k].clear()
        worker = self._workers[k] = _Worker()
        self._await_ready(worker)
        worker.start_reader(k, self._generations[k], self._inbox)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for worker in self._workers:
                worker.stop()  # EOF on stdin: the worker returns


class AdaptiveExecutor(ParallelExecutor):
    """A ``ParallelExecutor`` that times itself and runs the spec while the spec is
    faster on this machine (measured: on a VM delivering one CPU the parallel path
    ran 8-16% slower than the spec). Keeps a moving average of
    seconds per transaction for each mode and re-tries the other one every
    ``probe_every`` eligible blocks. The clock lives here, not in ``sharding/``."""

    def __init__(self, runner: JobRunner, *, probe_every: int = 8, **kwargs: Any) -> None:
        super().__init__(runner, **kwargs)
        self.probe_every = probe_every
        self.seconds_per_tx: dict[str, float] = {}
        self._eligible = 0

    def _timed(self, run: Callable[[], _T]) -> _T:
        self._eligible += 1
        parallel, spec = self.seconds_per_tx.get("parallel"), self.seconds_per_tx.get("spec")
        faster_spec = parallel is not None and spec is not None and spec < parallel
        probe = self._eligible % self.probe_every == 0
        self.prefer_spec = faster_spec != probe
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        stats = self.last_stats
        if stats is not None and stats.txs >= self.parallel_txs_min:
            mode = "spec" if stats.mode == "sequential" else "parallel"
            if stats.fallback in ("", "spec_faster_here"):
                sample = elapsed / stats.txs
                previous = self.seconds_per_tx.get(mode)
                self.seconds_per_tx[mode] = (
                    sample if previous is None else 0.7 * previous + 0.3 * sample)
        return result

    def apply_block(self, state: State, block: Block, *,
                    verify_signatures: bool = True) -> BlockResult:
        return self._timed(lambda: super(AdaptiveExecutor, self).apply_block(
            state, block, verify_signatures=verify_signatures))

    def build_block(self, state: State, txs: Iterable[SignedTx], inbound: Iterable[Receipt],
                    **kwargs: Any) -> tuple[Block, BlockResult, list[Rejected]]:
        return self._timed(lambda: super(AdaptiveExecutor, self).build_block(
            state, txs, inbound, **kwargs))


def make_executor(
    workers: int, *, on_stats: StatsSink | None = None, parallel_txs_min: int | None = None
) -> tuple[AdaptiveExecutor, ProcessRunner | None]:
    """The node's executor for ``[executor] workers`` (0: all cores) and its pool to
    close. One worker means no pool: the executor then runs the spec in the
    caller (and still reports each block's telemetry)."""
    count = resolve_workers(workers)
    runner = ProcessRunner(count) if count >= 2 else None
    executor = AdaptiveExecutor(
        InlineRunner(0) if runner is None else runner,
        on_stats=on_stats,
        parallel_txs_min=PARALLEL_TXS_MIN if parallel_txs_min is None else parallel_txs_min,
    )
    return executor, runner


__all__ = ["AdaptiveExecutor", "ExecutionStats", "ProcessRunner", "available_cores",
           "make_executor", "resolve_workers"]
