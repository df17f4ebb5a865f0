"""A worker's whole task (``run_job``): check signatures, run its transactions over
a snapshot of the job's keys, stop at the first one that leaves them.
Pure: the process pool calls it in another process."""

from __future__ import annotations

from collections.abc import Sequence

from consensus.kernel.codec import encode
from sharding.executor import TxOutcome, process_tx
from sharding.merkle import compute_leaf_hash
from sharding.parallel.jobs import Job, JobResult, Task, TaskResult, TxResult
from sharding.parallel.mvmemory import ESTIMATE, Version
from sharding.receipts import Receipt
from sharding.records import ShardParams
from sharding.state import Overlay, compute_leaves
from sharding.tx import InvalidTx, SignedTx, check_tx_stateless, verify_tx_signature


class Escaped(Exception):
    """A transaction touched a key outside its job's snapshot (not a ShardnetError:
    no program may catch it)."""


class SnapshotReader:
    """The job's keys (the declarations of its components): a read of any other
    key escapes."""

    __slots__ = ("values",)

    def __init__(self, values: dict[bytes, bytes | None]) -> None:
        self.values = values

    def get(self, key: bytes) -> bytes | None:
        if key not in self.values:
            raise Escaped(key.hex())
        return self.values[key]


def run_job(job: Job) -> JobResult:
    """A worker's whole task (pure: the pool calls it in another process).

    The guard is the job's key set, not each transaction's declaration: jobs hold
    whole components, so their key sets are disjoint, and a transaction that reads
    or writes only its job's keys sees exactly the values the spec gives it (every
    earlier writer of those keys ran before it in this job, in block order). Reads
    outside the set raise ``Escaped`` (``SnapshotReader``); writes are checked
    after each transaction. No per-transaction declaration is computed here.
    """
    bad = [
        index
        for index, tx, verify in zip(job.indices, job.txs, job.verify, strict=True)
        if verify and not verify_tx_signature(tx)
    ]
    tx_leaves = [
        (index, compute_leaf_hash(encode(tx)))
        for index, tx, execute in zip(job.indices, job.txs, job.execute, strict=True)
        if execute
    ] if job.leaves else []
    params = ShardParams(job.chain_id, job.shard, job.num_shards, job.height)
    if job.tasks:
        return run_task_job(params, job, bad)
    snapshot = dict(job.snapshot)
    footprint = snapshot.keys()
    batch = Overlay(SnapshotReader(snapshot))
    known_bad = set(job.known_bad)
    results: list[TxResult] = []
    escaped = -1
    for index, tx, execute in zip(job.indices, job.txs, job.execute, strict=True):
        if not execute:
            continue
        view = Overlay(batch)
        try:
            result = run_tx(view, params, tx, index, index in known_bad)
        except Exception:  # Escaped, or anything the spec must raise itself
            escaped = index
            break
        if not footprint >= view.writes.keys():
            escaped = index
            break
        batch.writes.update(view.writes)
        results.append(result)
    state_leaves = compute_leaves(batch.writes) if job.leaves else []
    return JobResult(bad, results, escaped, tx_leaves, state_leaves)


def run_tx(view: Overlay, params: ShardParams, tx: SignedTx, index: int, bad: bool) -> TxResult:
    """``process_tx`` on a fresh overlay (signature already checked), as a result."""
    try:
        outcome, receipts = process_tx_known_signature(view, params, tx, bad)
    except InvalidTx as exc:
        return TxResult(index, exc.reason, exc.detail, None, [], [])
    return TxResult(index, "", "", outcome, receipts, list(view.writes.items()))


def process_tx_known_signature(
    view: Overlay, params: ShardParams, tx: SignedTx, bad: bool
) -> tuple[TxOutcome, list[Receipt]]:
    """``process_tx(verify_signature=True)`` when the signature's verdict is known."""
    if bad:
        check_tx_stateless(
            tx, params.chain_id, params.shard, params.num_shards, verify_signatures=False
        )
        raise InvalidTx("signature does not verify", reason="bad_signature")
    return process_tx(view, params, tx, verify_signature=False)


RAN, MISSING, BLOCKED, RAISED = 0, 1, 2, 3  # TaskResult.status


# ---------------------------------------------------------------------------
# Optimistic mode (``optimistic.py``): one job of incarnations


class _Stop(Exception):
    """An incarnation read a key its snapshot lacks or an ESTIMATE (not a
    ShardnetError: no program may catch it)."""

    def __init__(self, status: int, key: bytes) -> None:
        super().__init__(key.hex())
        self.status, self.key = status, key


class _TaskReader:
    """A task's snapshot under the writes of the job's earlier tasks; records the
    version of every key read."""

    __slots__ = ("local", "reads", "snapshot")

    def __init__(self, snapshot: dict[bytes, tuple[bytes | None, int, int]],
                 local: dict[bytes, tuple[bytes | None, int, int]]) -> None:
        self.snapshot, self.local = snapshot, local
        self.reads: dict[bytes, Version] = {}

    def get(self, key: bytes) -> bytes | None:
        seen = self.snapshot.get(key)
        mine = self.local.get(key)
        if mine is not None and (seen is None or mine[1] >= seen[1]):
            seen = mine
        if seen is None:
            raise _Stop(MISSING, key)
        value, writer, incarnation = seen
        if incarnation == ESTIMATE:
            raise _Stop(BLOCKED, key)
        self.reads.setdefault(key, (writer, incarnation))
        return value


def run_task_job(params: ShardParams, job: Job, bad: list[int]) -> JobResult:
    """``run_tasks``; with ``Job.leaves`` also the tree leaf of each transaction that
    ran and ``compute_leaves`` of the job's last write per key (the caller uses a
    leaf only where its value is the block's final one)."""
    local: dict[bytes, tuple[bytes | None, int, int]] = {}
    results = run_tasks(params, job.tasks, local)
    if not job.leaves:
        return JobResult(bad, [], -1, tasks=results)
    tx_leaves = [(task.index, compute_leaf_hash(encode(task.tx)))
                 for task, result in zip(job.tasks, results, strict=True) if result.status == RAN]
    state_leaves = compute_leaves({key: value for key, (value, _, _) in local.items()})
    return JobResult(bad, [], -1, tx_leaves, state_leaves, results)


def run_tasks(params: ShardParams, tasks: Sequence[Task],
              local: dict[bytes, tuple[bytes | None, int, int]] | None = None
              ) -> list[TaskResult]:
    """A worker's optimistic job: each incarnation in index order over its snapshot
    and the writes of the job's earlier incarnations (``local``: key -> the last
    such write, its writer and incarnation)."""
    if local is None:
        local = {}
    results: list[TaskResult] = []
    for task in tasks:
        reader = _TaskReader({key: (value, writer, incarnation)
                              for key, value, writer, incarnation in task.snapshot}, local)
        view = Overlay(reader)
        try:
            result = run_tx(view, params, task.tx, task.index, task.bad)
        except _Stop as stop:
            results.append(TaskResult(task.index, task.incarnation, stop.status, stop.key,
                                      [], None))
            continue
        except Exception:  # anything the spec must raise itself: run it in the caller
            results.append(TaskResult(task.index, task.incarnation, RAISED, b"", [], None))
            continue
        for key, value in result.writes:
            local[key] = (value, task.index, task.incarnation)
        results.append(TaskResult(task.index, task.incarnation, RAN, b"",
                                  [(key, w, i) for key, (w, i) in reader.reads.items()], result))
    return results
