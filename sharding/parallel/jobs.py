"""What a worker receives and returns (msgpack over a pipe), and what runs jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from consensus.kernel.errors import ShardnetError
from sharding.executor import TxOutcome
from sharding.receipts import Receipt
from sharding.tx import SignedTx


class TxResult(msgspec.Struct, array_like=True, frozen=True):
    index: int
    invalid: str  # the InvalidTx reason, "" when the transaction may be in a block
    detail: str
    outcome: TxOutcome | None
    receipts: list[Receipt]  # unstamped, in emission order
    writes: list[tuple[bytes, bytes | None]]  # in first-write order


class Task(msgspec.Struct, array_like=True, frozen=True):
    """Optimistic mode (``optimistic.py``): run one incarnation of transaction
    ``index`` over ``snapshot``: per key the value this transaction would see in the
    multi-version memory when the job was made, with that value's version (writer
    index, -1 for the block's base; writer incarnation, -1 for an ESTIMATE: the
    writer was aborted, reading it is a dependency)."""

    index: int
    incarnation: int
    tx: SignedTx
    bad: bool  # signature known bad (proposer)
    snapshot: list[tuple[bytes, bytes | None, int, int]]  # key, value, writer, incarnation


class TaskResult(msgspec.Struct, array_like=True, frozen=True):
    """One incarnation's outcome: ``status`` 0 ran (``result``), 1 read a key the
    snapshot lacks (``key``), 2 read an ESTIMATE (``key``), 3 raised something
    else (the caller runs it itself, as the spec would). ``reads``: the version of
    each key read (writer index, -1 base; writer incarnation)."""

    index: int
    incarnation: int
    status: int
    key: bytes
    reads: list[tuple[bytes, int, int]]
    result: TxResult | None


class Job(msgspec.Struct, array_like=True, frozen=True):
    """Check the signatures of the transactions flagged ``verify``; run those
    flagged ``execute`` in order over ``snapshot`` (their declared keys)."""

    chain_id: str
    shard: int
    num_shards: int
    indices: list[int]
    txs: list[SignedTx]
    verify: list[bool]
    execute: list[bool]
    known_bad: list[int]  # indices whose signature is already known bad (proposer)
    snapshot: list[tuple[bytes, bytes | None]]
    # Also return the roots' per-item hashes: the tree leaf of each executed
    # transaction (tx root) and each final write's bucket and entry (state root).
    leaves: bool = False
    height: int = 0  # the block's (``ShardParams.height``: farms accrue per block)
    # Optimistic mode: incarnations to run in index order (each sees the writes of
    # the job's earlier tasks); the fields above are then empty.
    tasks: list[Task] = []


class JobResult(msgspec.Struct, array_like=True, frozen=True):
    bad_signatures: list[int]
    results: list[TxResult]  # one per executed transaction before ``escaped``
    escaped: int  # index of the first transaction that left its job's keys, or -1
    # With ``Job.leaves``: (index, tree leaf hash of the encoded transaction) of each
    # executed transaction, and ``state.compute_leaves`` of the job's final writes.
    tx_leaves: list[tuple[int, bytes]] = []
    state_leaves: list[tuple[bytes, bytes | None, int, bytes]] = []
    tasks: list[TaskResult] = []  # one per ``Job.tasks``


class JobRunner(Protocol):
    """Runs jobs on ``workers`` workers, each worker's jobs in submission order.

    ``submit`` queues job k on worker k and ``collect`` returns the next result of
    workers 0..count-1; ``submit_to`` queues one job on one worker and
    ``collect_any`` returns the next result of whichever worker has one; ``reset``
    discards queued work after an error. Raises ``RunnerFailed`` when a worker fails.
    """

    @property
    def workers(self) -> int: ...

    def submit(self, jobs: Sequence[Job]) -> None: ...

    def submit_to(self, worker: int, job: Job) -> None: ...

    def collect(self, count: int) -> list[JobResult]: ...

    def collect_any(self) -> tuple[int, JobResult]: ...

    def reset(self) -> None: ...


class RunnerFailed(ShardnetError):
    """The job runner could not run a round (a worker died): run the spec instead."""

    reason = "runner_failed"
