"""The parallel executor, pure part: plan a block, describe worker jobs, merge results.

The sequential executor (``sharding.executor``) is the spec; everything here must
give byte-identical results (state root, receipts, outcomes, write set and its
order). How:

1. Inbound receipts and channel cursors run first, in the calling process, exactly
   as the spec runs them; the resulting overlay is the base every transaction sees.
2. Each transaction declares the keys it reads and writes (``declared_access``).
   Transactions that share a key are in one *component* (union-find); components
   never touch each other's keys, so they can run anywhere, each in block order.
3. Components go to workers' execution jobs (largest first, least-loaded worker).
   Signature checks, which dominate the cost, go in chunks to whichever worker is
   free, so they balance the workers even when one component holds every
   transaction (a fully contended block still checks its signatures in parallel).
4. A job runs its transactions in block order over a snapshot of their declared
   keys and records, per transaction, its outcome, emitted receipts and writes in
   first-write order. A transaction that reads or writes a key it did not
   declare stops its job there ("escaped", Block-STM's failed validation).
5. The merge folds the per-transaction writes into the block overlay in block
   order (which reproduces the spec's first-write order), re-executes every
   transaction from the first escaped one on in this process, stamps outgoing
   receipts (``process_stamp_receipts``: order-dependent, so done once here) and
   computes the roots as the spec does.

Why the result is the spec's: before the first escaped transaction, every
transaction touched only declared keys, and every earlier writer of those keys is
in its component, so it read exactly the values it reads in the spec.

With at most ``OVERLAP_WORKERS_MAX`` workers a replica's signed block runs
*overlapped* instead: the spec (without signature checks) in this process while the
workers check the signatures; no plan, jobs or merge. On two cores that is faster,
because executing a native-program transaction costs a quarter of checking its
signature, so one core executes a block in order before two have checked it.

Small blocks, and blocks whose signatures were checked beforehand, run the spec
directly (measured: there the jobs cannot win, see docs/EXECUTOR.md). The
process pool is not here (this package is pure): ``JobRunner`` is what runs jobs,
``node.executor_pool`` provides one with worker processes, ``InlineRunner`` runs
them in this process (tests, and a reference for the pool).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

import msgspec

from consensus.kernel.errors import ShardnetError
from sharding.block import (
    EMPTY_EVIDENCE_ROOT,
    Block,
    BlockHeader,
    compute_inbound_root,
    compute_tx_root,
)
from sharding.executor import (
    BLOCK_RECEIPTS_MAX,
    BLOCK_TXS_MAX,
    BlockResult,
    InvalidBlock,
    ReceiptOutcome,
    Rejected,
    TxOutcome,
    apply_block,
    build_block,
    check_header_roots,
    check_inbound_order,
    check_no_bad_signature,
    compute_bad_signatures,
    process_cursors,
    process_inbound_receipt,
    process_tx,
    select_inbound,
)
from sharding.programs import declared_access
from sharding.receipts import Receipt, compute_receipts_root, process_stamp_receipts
from sharding.records import ShardParams, get_shard_params
from sharding.state import Overlay, State, StateReader
from sharding.tx import InvalidTx, SignedTx, check_tx_stateless, verify_tx_signature

# Below this a block runs the spec. Measured: an empty round costs 0.04 ms (median; 0.2
# at p90), and per transaction the parallel path adds ~15 µs here while saving about
# half of ~110 µs of signature check + execution: it wins above ~15 transactions on an
# idle machine. 48 leaves room for worker scheduling delays on a loaded one.
PARALLEL_TXS_MIN = 48
SIGNATURE_COST = 1.0  # relative cost of one Ed25519 verification ...
EXECUTION_COST = 0.3  # ... and of executing one transaction in a job (measured)
HOT_KEYS_MAX = 3
EARLY_SIGNATURE_SHARE = 0.25  # checked while this process plans (~12 µs per tx here)
SIGNATURE_CHUNK = 32  # signatures per job handed to whichever worker is free (~3 ms)
QUEUE_DEPTH_MERGING = 10  # chunks queued per worker while this process merges (~30 ms)
QUEUE_DEPTH = 2  # chunks queued per worker otherwise: a slow worker holds little back
# With at most this many workers a replica's block runs *overlapped*: this process
# executes the spec (signatures not checked) in block order while the workers check
# the signatures. Measured here: a signature check costs ~100 µs, the spec without
# it ~27 µs per transaction (roots included), so with w workers the spec is off the
# critical path while 27 <= 100 / (w + 1) ... roughly, w <= 2; with more workers the
# spec would be the bottleneck and the block runs partitioned. Overlapping spends no
# CPU on planning, jobs and merging (~45 ms of a 2,000-transfer block), which is what
# bounded the partitioned path's speedup on two cores (docs/EXECUTOR.md).
OVERLAP_WORKERS_MAX = 2
OVERLAP_EARLY_SHARE = 0.35  # of the chunks, queued per worker before the spec starts


# ---------------------------------------------------------------------------
# Jobs: what a worker receives and returns (msgpack over a pipe)


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


class TxResult(msgspec.Struct, array_like=True, frozen=True):
    index: int
    invalid: str  # the InvalidTx reason, "" when the transaction may be in a block
    detail: str
    outcome: TxOutcome | None
    receipts: list[Receipt]  # unstamped, in emission order
    writes: list[tuple[bytes, bytes | None]]  # in first-write order


class JobResult(msgspec.Struct, array_like=True, frozen=True):
    bad_signatures: list[int]
    results: list[TxResult]  # one per executed transaction before ``escaped``
    escaped: int  # index of the first transaction that left its declaration, or -1


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


class Escaped(Exception):
    """A transaction touched a key outside its declaration (not a ShardnetError:
    no program may catch it)."""


class GuardedReader:
    """Reads of the current transaction, limited to its declared keys."""

    __slots__ = ("allowed", "base")

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.allowed: frozenset[bytes] = frozenset()

    def get(self, key: bytes) -> bytes | None:
        if key not in self.allowed:
            raise Escaped(key.hex())
        return self.base.get(key)


class SnapshotReader:
    __slots__ = ("values",)

    def __init__(self, values: dict[bytes, bytes | None]) -> None:
        self.values = values

    def get(self, key: bytes) -> bytes | None:
        if key not in self.values:
            raise Escaped(key.hex())
        return self.values[key]


def run_job(job: Job) -> JobResult:
    """A worker's whole task (pure: the pool calls it in another process)."""
    bad = [
        index
        for index, tx, verify in zip(job.indices, job.txs, job.verify, strict=True)
        if verify and not verify_tx_signature(tx)
    ]
    params = ShardParams(job.chain_id, job.shard, job.num_shards)
    batch = Overlay(SnapshotReader(dict(job.snapshot)))
    guard = GuardedReader(batch)
    known_bad = set(job.known_bad)
    results: list[TxResult] = []
    escaped = -1
    for index, tx, execute in zip(job.indices, job.txs, job.execute, strict=True):
        if not execute:
            continue
        reads, writes = declared_access(tx, params.num_shards)
        guard.allowed = reads
        view = Overlay(guard)
        try:
            result = run_tx(view, params, tx, index, index in known_bad)
        except Exception:  # Escaped, or anything the spec must raise itself
            escaped = index
            break
        if not writes.issuperset(view.writes):
            escaped = index
            break
        batch.writes.update(view.writes)
        results.append(result)
    return JobResult(bad, results, escaped)


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


# ---------------------------------------------------------------------------
# Planning (pure)


@dataclass(frozen=True, slots=True)
class Plan:
    components: list[list[int]]  # indices into the transactions, each in block order
    hot_keys: list[tuple[bytes, int]]  # the most shared keys and their transaction counts
    keys: list[frozenset[bytes]]  # declared reads | writes per transaction


def compute_plan(txs: Sequence[SignedTx], num_shards: int) -> Plan:
    """Connected components of the transactions under "declares a common key"."""
    parent = list(range(len(txs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[bytes, int] = {}
    counts: Counter[bytes] = Counter()
    keys: list[frozenset[bytes]] = []
    for index, tx in enumerate(txs):
        reads, writes = declared_access(tx, num_shards)
        touched = reads | writes
        keys.append(touched)
        counts.update(touched)
        for key in touched:
            first = owner.setdefault(key, index)
            if first != index:
                a, b = find(first), find(index)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for index in range(len(txs)):
        groups.setdefault(find(index), []).append(index)
    hot = [(key, n) for key, n in counts.most_common(HOT_KEYS_MAX) if n > 1]
    return Plan(list(groups.values()), hot, keys)


def compute_assignment(
    plan: Plan, workers: int, to_check: Sequence[int]
) -> list[tuple[list[int], list[int]]]:
    """Per worker: (indices to execute, indices whose signature to check).

    Components go largest first to the worker with the least execution; then the
    signature checks in ``to_check`` fill every worker up to an equal total cost,
    so a block whose transactions all conflict still checks its signatures on
    every worker.
    """
    executes: list[list[int]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for component in sorted(plan.components, key=len, reverse=True):
        job = loads.index(min(loads))
        executes[job].extend(component)
        loads[job] += EXECUTION_COST * len(component)
    for indices in executes:
        indices.sort()
    share = (sum(loads) + SIGNATURE_COST * len(to_check)) / workers
    checks: list[list[int]] = []
    position = 0
    for job in range(workers):
        room = max(0, round((share - loads[job]) / SIGNATURE_COST))
        if job == workers - 1:
            room = len(to_check) - position
        checks.append(list(to_check[position : position + room]))
        position += len(checks[-1])
    if position < len(to_check):  # rounding: the last worker takes the rest
        checks[-1].extend(to_check[position:])
    return [(e, c) for e, c in zip(executes, checks, strict=True)]


def make_jobs(
    params: ShardParams,
    view: StateReader,
    txs: Sequence[SignedTx],
    plan: Plan,
    assignment: Sequence[tuple[Sequence[int], Sequence[int]]],
    known_bad: Iterable[int] = (),
) -> list[Job]:
    bad = sorted(set(known_bad))
    jobs: list[Job] = []
    for execute_indices, check_indices in assignment:
        executed, checked = set(execute_indices), set(check_indices)
        indices = sorted(executed | checked)
        snapshot: dict[bytes, bytes | None] = {}
        for index in execute_indices:
            for key in plan.keys[index]:
                if key not in snapshot:
                    snapshot[key] = view.get(key)
        jobs.append(
            Job(
                chain_id=params.chain_id,
                shard=params.shard,
                num_shards=params.num_shards,
                indices=indices,
                txs=[txs[i] for i in indices],
                verify=[i in checked for i in indices],
                execute=[i in executed for i in indices],
                known_bad=[i for i in bad if i in executed],
                snapshot=list(snapshot.items()),
            )
        )
    return jobs


def make_signature_jobs(
    params: ShardParams, txs: Sequence[SignedTx], chunks: Sequence[Sequence[int]]
) -> list[Job]:
    """Signature checks only: job k checks ``chunks[k]``."""
    return [
        Job(
            params.chain_id,
            params.shard,
            params.num_shards,
            list(chunk),
            [txs[i] for i in chunk],
            [True] * len(chunk),
            [False] * len(chunk),
            [],
            [],
        )
        for chunk in chunks
    ]


# ---------------------------------------------------------------------------
# Telemetry


@dataclass(frozen=True, slots=True)
class ExecutionStats:
    """What one block's execution looked like (``block.executed``, metrics)."""

    purpose: str  # "propose" or "apply"
    height: int
    txs: int
    mode: str  # "parallel" (partitioned), "overlapped", or "sequential" (small block, fallback)
    workers: int
    components: int
    largest_component_share: float
    reexecutions: int  # transactions re-executed after one left its declaration
    hot_keys: tuple[tuple[str, int], ...]  # (key hex, transactions declaring it)
    fallback: str = ""  # why the block ran the spec (small_block, no_signatures, ...)

    def as_log_fields(self) -> dict[str, object]:
        return {
            "purpose": self.purpose,
            "txs_count": self.txs,
            "mode": self.mode,
            "workers": self.workers,
            "components": self.components,
            "largest_component_share": round(self.largest_component_share, 4),
            "reexecutions": self.reexecutions,
            "hot_keys": [list(item) for item in self.hot_keys],
            "fallback": self.fallback,
        }


def compute_stats(
    purpose: str, height: int, txs_count: int, mode: str, workers: int, plan: Plan | None,
    reexecutions: int = 0, fallback: str = "",
) -> ExecutionStats:
    if plan is None or txs_count == 0:
        return ExecutionStats(purpose, height, txs_count, mode, workers, int(txs_count > 0),
                              float(txs_count > 0), reexecutions, (), fallback)
    largest = max(len(c) for c in plan.components)
    return ExecutionStats(
        purpose, height, txs_count, mode, workers, len(plan.components),
        largest / txs_count, reexecutions,
        tuple((key.hex(), n) for key, n in plan.hot_keys), fallback,
    )


class RunnerFailed(ShardnetError):
    """The job runner could not run a round (a worker died): run the spec instead."""

    reason = "runner_failed"


# ---------------------------------------------------------------------------
# Merge


@dataclass(slots=True)
class _Body:
    """The block overlay being built, as ``sharding.executor._execute`` builds it."""

    state: State
    params: ShardParams
    view: Overlay
    outbox: list[Receipt]
    inbound_outcomes: list[ReceiptOutcome]
    included: list[SignedTx]
    outcomes: list[TxOutcome]
    reexecutions: int = 0


def _begin(state: State, inbound: Sequence[Receipt]) -> _Body:
    params = get_shard_params(state)
    view = Overlay(state)
    cursors = check_inbound_order(view, params, inbound)
    body = _Body(state, params, view, [], [], [], [])
    for receipt in inbound:
        outcome, emitted = process_inbound_receipt(view, params, receipt)
        body.inbound_outcomes.append(outcome)
        body.outbox.extend(emitted)
    process_cursors(view, cursors, inbound)
    return body


def _fold(
    body: _Body,
    txs: Sequence[SignedTx],
    results: Sequence[JobResult],
    known_bad: set[int],
    rejected: list[Rejected] | None,
) -> None:
    """Merge job results in block order; from the first escaped transaction on,
    run the spec here. With ``rejected`` None the first invalid transaction raises."""
    by_index: dict[int, TxResult] = {}
    escaped = len(txs)
    for job in results:
        if job.escaped >= 0:
            escaped = min(escaped, job.escaped)
        for result in job.results:
            by_index[result.index] = result
    view, params = body.view, body.params
    for index, tx in enumerate(txs):
        if index < escaped:
            result = by_index[index]
            invalid, detail = result.invalid, result.detail
        else:
            body.reexecutions += 1
            try:
                outcome, emitted = process_tx_known_signature(view, params, tx, index in known_bad)
            except InvalidTx as exc:
                invalid, detail = exc.reason, exc.detail
            else:
                result = TxResult(index, "", "", outcome, emitted, [])
                invalid = ""
        if invalid:
            if rejected is None:
                raise InvalidBlock(
                    f"tx {index}: {detail}", reason="invalid_tx", tx_index=index,
                    tx_reason=invalid,
                )
            rejected.append(Rejected(tx, invalid))
            continue
        if index < escaped:
            view.writes.update(result.writes)
        if result.outcome is None:
            raise ShardnetError("a valid job result has no outcome", reason="bad_job_result")
        body.included.append(tx)
        body.outcomes.append(result.outcome)
        body.outbox.extend(result.receipts)


def _verdict(bad: Sequence[int], invalid: InvalidBlock | None,
             result: BlockResult | None) -> BlockResult:
    """The spec's order: a bad signature (the lowest) wins over what execution found."""
    check_no_bad_signature(bad)
    if invalid is not None:
        raise invalid
    if result is None:
        raise ShardnetError("execution produced no result", reason="bug")
    return result


def _finish(body: _Body, inbound: Sequence[Receipt]) -> BlockResult:
    receipts = process_stamp_receipts(body.view, body.outbox)
    prepared = body.state.prepare(body.view.writes)
    return BlockResult(
        state_root=prepared.root,
        receipts_root=compute_receipts_root(receipts),
        tx_root=compute_tx_root(body.included),
        inbound_root=compute_inbound_root(inbound),
        receipts=receipts,
        outcomes=body.outcomes,
        inbound_outcomes=body.inbound_outcomes,
        writes=prepared.writes,
        prepared=prepared,
    )


# ---------------------------------------------------------------------------
# The executor


StatsSink = Callable[[ExecutionStats], None]


class _SignaturePump:
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


class ParallelExecutor:
    """``apply_block`` and ``build_block`` with the spec's signatures and results,
    run over ``runner``'s workers. ``on_stats`` receives each block's telemetry."""

    def __init__(
        self,
        runner: JobRunner,
        *,
        parallel_txs_min: int = PARALLEL_TXS_MIN,
        parallel_unsigned: bool = False,
        overlap_workers_max: int = OVERLAP_WORKERS_MAX,
        on_stats: StatsSink | None = None,
    ) -> None:
        self.runner = runner
        self.parallel_txs_min = parallel_txs_min
        self.parallel_unsigned = parallel_unsigned
        self.overlap_workers_max = overlap_workers_max
        self.on_stats = on_stats
        self.last_stats: ExecutionStats | None = None
        # Set by a caller that measured the spec to be faster here (node.executor_pool).
        self.prefer_spec = False

    @property
    def workers(self) -> int:
        return self.runner.workers

    def _report(self, stats: ExecutionStats) -> None:
        self.last_stats = stats
        if self.on_stats is not None:
            self.on_stats(stats)

    def _sequential_reason(self, txs_count: int, verify_signatures: bool) -> str:
        """Why a block should run the spec rather than jobs, or ""."""
        if self.workers < 1:
            return "no_workers"
        if txs_count < self.parallel_txs_min:
            return "small_block"
        if not verify_signatures and not self.parallel_unsigned:
            # Measured: without signature checks, a 2,000-transfer block spends
            # about as long planning and merging here as the spec takes in all.
            return "no_signatures"
        if self.prefer_spec:
            return "spec_faster_here"
        return ""

    def compute_bad_signatures(self, txs: Sequence[SignedTx]) -> list[int]:
        """``sharding.executor.compute_bad_signatures``, spread over the workers."""
        if self.workers < 1 or len(txs) < self.parallel_txs_min:
            return compute_bad_signatures(txs)
        shard = ShardParams("", 0, 1)  # signature jobs do not look at the shard
        try:
            return _SignaturePump(self.runner, shard, txs, range(len(txs))).drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError):
            return compute_bad_signatures(txs)
        finally:
            self.runner.reset()

    def _round(self, jobs: Sequence[Job]) -> list[JobResult]:
        self.runner.submit(jobs)
        return self.runner.collect(len(jobs))

    # -- replica: validate a proposed or synced block

    def apply_block(
        self, state: State, block: Block, *, verify_signatures: bool = True
    ) -> BlockResult:
        header = block.header
        txs = block.txs
        reason = self._sequential_reason(len(txs), verify_signatures)
        if reason:
            result = apply_block(state, block, verify_signatures=verify_signatures)
            self._report(compute_stats("apply", header.height, len(txs), "sequential", 1, None,
                                       fallback=reason))
            return result
        params = get_shard_params(state)
        # Verify the block is for this shard.
        if header.shard != params.shard:
            raise InvalidBlock(f"block for shard {header.shard}", reason="wrong_shard")
        # Verify the block carries no more transactions than a block may.
        if len(txs) > BLOCK_TXS_MAX:
            raise InvalidBlock(f"{len(txs)} transactions", reason="too_many_txs")
        # Verify there is either no proof or one proof per inbound receipt.
        if block.inbound_proofs and len(block.inbound_proofs) != len(block.inbound):
            raise InvalidBlock("proof count differs from receipt count", reason="bad_proofs")
        if verify_signatures and self.workers <= self.overlap_workers_max:
            return self._apply_overlapped(state, block, params)
        try:
            body = _begin(state, block.inbound)
        except InvalidBlock:
            # The spec checks signatures before the inbound receipts: so do we.
            if verify_signatures:
                self._check_signatures(params, txs)
            raise
        workers = self.workers
        # One pipelined round: signature chunks start while this process plans;
        # each worker then gets its execution job and more chunks, which keep it
        # busy while this process merges and computes the roots.
        pump = _SignaturePump(self.runner, params, txs,
                              range(len(txs)) if verify_signatures else range(0))
        plan: Plan | None = None
        try:
            pump.feed_all(-(-int(len(pump.chunks) * EARLY_SIGNATURE_SHARE) // workers))
            plan = compute_plan(txs, params.num_shards)
            assignment = compute_assignment(plan, workers, [])
            for worker, job in enumerate(make_jobs(params, body.view, txs, plan, assignment)):
                pump.add_execution(worker, job)
            pump.feed_all(QUEUE_DEPTH_MERGING)
            executed: dict[int, JobResult] = {}
            while len(executed) < workers:
                done = pump.next_execution(QUEUE_DEPTH_MERGING)
                if done is None:
                    raise RunnerFailed("an execution result is missing")
                executed[done[0]] = done[1]
            invalid: InvalidBlock | None = None
            merged: BlockResult | None = None
            try:
                _fold(body, txs, [executed[k] for k in range(workers)], set(), None)
                merged = _finish(body, block.inbound)
            except InvalidBlock as exc:
                invalid = exc
            bad = pump.drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError) as exc:
            return self._apply_spec_after(exc, state, block, verify_signatures, plan)
        finally:
            self.runner.reset()
        merged = _verdict(bad, invalid, merged)
        check_header_roots(header, merged)
        self._report(compute_stats("apply", header.height, len(txs), "parallel", workers,
                                   plan, body.reexecutions))
        return merged

    def _apply_overlapped(self, state: State, block: Block, params: ShardParams) -> BlockResult:
        """The spec without signature checks here, the signature checks on the
        workers at the same time. The result is the spec's: with every signature
        good, checking them changes nothing; with a bad one, the lowest-indexed
        bad signature is the spec's verdict whatever execution found (the spec
        checks signatures right after the header checks done by the caller)."""
        txs = block.txs
        header = block.header
        pump = _SignaturePump(self.runner, params, txs, range(len(txs)))
        invalid: InvalidBlock | None = None
        result: BlockResult | None = None
        try:
            pump.feed_all(max(QUEUE_DEPTH, int(len(pump.chunks) * OVERLAP_EARLY_SHARE)))
            try:
                result = apply_block(state, block, verify_signatures=False)
            except InvalidBlock as exc:
                invalid = exc
            # Telemetry of what a partitioned run would see, while the workers finish.
            plan = compute_plan(txs, params.num_shards)
            bad = pump.drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError) as exc:
            return self._apply_spec_after(exc, state, block, True, None)
        finally:
            self.runner.reset()
        result = _verdict(bad, invalid, result)
        self._report(compute_stats("apply", header.height, len(txs), "overlapped", self.workers,
                                   plan))
        return result

    def _apply_spec_after(self, failure: Exception, state: State, block: Block,
                          verify_signatures: bool, plan: Plan | None) -> BlockResult:
        """The workers failed mid-block: run it with the spec, results identical."""
        self.runner.reset()
        result = apply_block(state, block, verify_signatures=verify_signatures)
        self._report(compute_stats("apply", block.header.height, len(block.txs), "sequential",
                                   1, plan, fallback=type(failure).__name__))
        return result

    def _check_signatures(self, params: ShardParams, txs: Sequence[SignedTx]) -> None:
        try:
            bad = _SignaturePump(self.runner, params, txs, range(len(txs))).drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError):
            self.runner.reset()
            bad = [i for i, tx in enumerate(txs) if not verify_tx_signature(tx)]
        check_no_bad_signature(bad)

    # -- proposer

    def build_block(
        self,
        state: State,
        txs: Iterable[SignedTx],
        inbound: Iterable[Receipt],
        *,
        height: int,
        view: int,
        prev_hash: bytes,
        time_ms: int,
        proposer: int,
        verify_signatures: bool = True,
        txs_max: int = BLOCK_TXS_MAX,
        receipts_max: int = BLOCK_RECEIPTS_MAX,
    ) -> tuple[Block, BlockResult, list[Rejected]]:
        pending = iter(txs)
        window = list(islice(pending, txs_max))
        reason = self._sequential_reason(len(window), verify_signatures)
        if reason:
            return self._build_sequential(
                state, _chain(window, pending), inbound, height=height, view=view,
                prev_hash=prev_hash, time_ms=time_ms, proposer=proposer,
                verify_signatures=verify_signatures, txs_max=txs_max,
                receipts_max=receipts_max, plan=None, fallback=reason,
            )
        inbound = list(inbound)
        params = get_shard_params(state)
        selected = select_inbound(state, params, inbound, receipts_max)
        body = _begin(state, selected)
        rejected: list[Rejected] = []
        plan: Plan | None = None
        consumed: list[SignedTx] = []
        used = 0
        try:
            while window:
                consumed.extend(window)
                plan = compute_plan(window, params.num_shards)
                known_bad: set[int] = set()
                if verify_signatures:
                    pump = _SignaturePump(self.runner, params, window, range(len(window)))
                    known_bad = set(pump.drain())
                assignment = compute_assignment(plan, self.workers, [])
                jobs = make_jobs(params, body.view, window, plan, assignment, known_bad)
                used = max(used, sum(1 for e, _ in assignment if e))
                _fold(body, window, self._round(jobs), known_bad, rejected)
                window = list(islice(pending, txs_max - len(body.included)))
        except (RunnerFailed, msgspec.MsgspecError, OverflowError) as exc:
            self.runner.reset()
            return self._build_sequential(
                state, _chain(consumed, pending), inbound, height=height, view=view,
                prev_hash=prev_hash, time_ms=time_ms, proposer=proposer,
                verify_signatures=verify_signatures, txs_max=txs_max,
                receipts_max=receipts_max, plan=plan, fallback=type(exc).__name__,
            )
        finally:
            self.runner.reset()
        result = _finish(body, selected)
        header = BlockHeader(
            shard=params.shard, height=height, view=view, prev_hash=prev_hash, time_ms=time_ms,
            proposer=proposer, tx_root=result.tx_root, inbound_root=result.inbound_root,
            receipts_root=result.receipts_root, state_root=result.state_root,
            evidence_root=EMPTY_EVIDENCE_ROOT,
        )
        self._report(compute_stats("propose", height, len(body.included), "parallel", used,
                                   plan, body.reexecutions))
        return Block(header=header, txs=body.included, inbound=selected), result, rejected

    def _build_sequential(
        self,
        state: State,
        txs: Iterable[SignedTx],
        inbound: Iterable[Receipt],
        *,
        height: int,
        view: int,
        prev_hash: bytes,
        time_ms: int,
        proposer: int,
        verify_signatures: bool,
        txs_max: int,
        receipts_max: int,
        plan: Plan | None,
        fallback: str,
    ) -> tuple[Block, BlockResult, list[Rejected]]:
        built = build_block(
            state, txs, inbound, height=height, view=view, prev_hash=prev_hash,
            time_ms=time_ms, proposer=proposer, verify_signatures=verify_signatures,
            txs_max=txs_max, receipts_max=receipts_max,
        )
        self._report(compute_stats("propose", height, len(built[0].txs), "sequential", 1,
                                   plan, fallback=fallback))
        return built


def _chain(first: Sequence[SignedTx], rest: Iterator[SignedTx]) -> Iterator[SignedTx]:
    yield from first
    yield from rest
