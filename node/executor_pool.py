"""The executor's worker processes: a ``JobRunner`` for ``sharding.parallel``.

Why processes: CPython 3.11 threads do not run Python in parallel, and Ed25519
verification in ``cryptography`` holds the GIL (measured: two threads verify no
faster than one, docs/BENCHMARKS.md). The pool lives as long as the node: its
processes start once and each owns one pipe pair; a round sends job k to worker
k as length-prefixed msgpack and reads the answers back. A worker that dies is
restarted and the round fails with ``RunnerFailed``, on which the executor runs
the block with the spec instead.
"""

from __future__ import annotations

import contextlib
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NoReturn

import msgspec

from sharding.parallel import (
    PARALLEL_TXS_MIN,
    ExecutionStats,
    InlineRunner,
    Job,
    JobResult,
    ParallelExecutor,
    RunnerFailed,
    StatsSink,
    run_job,
)

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
    # The reader thread needs the GIL after every pipe read; with the default 5 ms
    # switch interval a 500 KB job took 15-30 ms to arrive while the main thread
    # verified signatures (measured). 0.2 ms keeps the hand-over short.
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
    __slots__ = ("process",)

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from node.executor_pool import worker_main; worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )

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
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class ProcessRunner:
    """``workers`` persistent worker processes, each on its own stdin/stdout pipe.

    Workers are plain ``python -c`` subprocesses rather than ``multiprocessing``
    children: no fork of a threaded node, and no re-import of the caller's
    ``__main__`` (which ``spawn`` does, breaking scripts without a main guard).
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a process runner needs at least one worker")
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(JobResult)
        self._lock = threading.Lock()
        self._closed = False
        self._workers = [_Worker() for _ in range(workers)]
        self._outstanding = [0] * workers
        try:
            for worker in self._workers:
                self._await_ready(worker)
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
        with self._lock:
            if self._closed:
                raise RunnerFailed("executor pool is closed")
            for k, job in enumerate(jobs):
                try:
                    self._workers[k].send(self._encoder.encode(job))
                except OSError:
                    self._fail(k)
                self._outstanding[k] += 1

    def collect(self, count: int) -> list[JobResult]:
        with self._lock:
            results: list[JobResult] = []
            for k in range(count):
                if self._outstanding[k] < 1:
                    raise ValueError(f"nothing submitted to worker {k}")
                try:
                    data = self._workers[k].receive()
                except (EOFError, OSError):
                    self._fail(k)
                self._outstanding[k] -= 1
                results.append(self._decoder.decode(data))
            return results

    def reset(self) -> None:
        """Read and drop the results still queued (after an error mid-round)."""
        with self._lock:
            for k, worker in enumerate(self._workers):
                while self._outstanding[k] > 0:
                    try:
                        worker.receive()
                    except (EOFError, OSError):
                        self._restart(k)
                        break
                    self._outstanding[k] -= 1

    def _fail(self, k: int) -> NoReturn:
        self._restart(k)
        raise RunnerFailed(f"executor worker {k} failed")

    def _restart(self, k: int) -> None:
        old = self._workers[k]
        old.process.kill()
        old.stop()
        self._workers[k] = _Worker()
        self._outstanding[k] = 0
        self._await_ready(self._workers[k])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for worker in self._workers:
                worker.stop()  # EOF on stdin: the worker returns


def make_executor(
    workers: int, *, on_stats: StatsSink | None = None, parallel_txs_min: int | None = None
) -> tuple[ParallelExecutor, ProcessRunner | None]:
    """The node's executor for ``[executor] workers`` (0: all cores) and its pool to
    close. One worker means no pool: the executor then runs the spec in the
    caller (and still reports each block's telemetry)."""
    count = resolve_workers(workers)
    runner = ProcessRunner(count) if count >= 2 else None
    executor = ParallelExecutor(
        InlineRunner(0) if runner is None else runner,
        on_stats=on_stats,
        parallel_txs_min=PARALLEL_TXS_MIN if parallel_txs_min is None else parallel_txs_min,
    )
    return executor, runner


__all__ = ["ExecutionStats", "ProcessRunner", "available_cores", "make_executor",
           "resolve_workers"]
