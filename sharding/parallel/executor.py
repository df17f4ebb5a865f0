"""``ParallelExecutor``: the spec's ``apply_block`` and ``build_block`` (same
signatures, byte-identical results) run over a ``JobRunner``'s workers, partitioned
or overlapped, or the spec itself when jobs cannot win (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import msgspec

from sharding.block import EMPTY_EVIDENCE_ROOT, Block, BlockHeader
from sharding.executor import (
    BLOCK_RECEIPTS_MAX,
    BLOCK_TXS_MAX,
    BlockResult,
    InvalidBlock,
    Rejected,
    apply_block,
    build_block,
    check_block_shape,
    check_header_roots,
    check_no_bad_signature,
    compute_bad_signatures,
    select_inbound,
)
from sharding.parallel.jobs import Job, JobResult, JobRunner, RunnerFailed
from sharding.parallel.merge import (
    Body,
    begin,
    collect_state_leaves,
    collect_tx_leaves,
    finish,
    fold,
    verdict,
)
from sharding.parallel.mvmemory import MVMemory
from sharding.parallel.optimistic import (
    ROUND_TASKS_MIN,
    ROUNDS_MAX,
    OptimisticReport,
    Scheduler,
    run_optimistic,
)
from sharding.parallel.plan import Plan, compute_assignment, compute_plan, make_jobs
from sharding.parallel.pump import SignaturePump
from sharding.parallel.telemetry import ExecutionStats, StatsSink, compute_stats
from sharding.receipts import Receipt
from sharding.records import ShardParams, get_shard_params
from sharding.state import State
from sharding.tx import SignedTx

# Below this a block runs the spec. Measured: an empty round costs 0.04 ms (median; 0.2
# at p90), and per transaction the parallel path adds ~15 µs here while saving about
# half of ~110 µs of signature check + execution: it wins above ~15 transactions on an
# idle machine. 48 leaves room for worker scheduling delays on a loaded one.
PARALLEL_TXS_MIN = 48
EARLY_SIGNATURE_SHARE = 0.25  # checked while this process plans (~12 µs per tx here)
QUEUE_DEPTH_MERGING = 10  # chunks queued per worker while this process merges (~25 ms)
# With at most this many workers a replica's block runs *overlapped*: this process
# executes the spec (signatures not checked) in block order while the workers check
# the signatures. Measured here: a signature check costs ~100 µs, the spec without
# it ~27 µs per transaction (roots included), so with w workers the spec is off the
# critical path while 27 <= 100 / (w + 1) ... roughly, w <= 2; with more workers the
# spec would be the bottleneck and the block runs partitioned. Overlapping spends no
# CPU on planning, jobs and merging (~45 ms of a 2,000-transfer block), which is what
# bounded the partitioned path's speedup on two cores (docs/EXECUTOR.md).
OVERLAP_WORKERS_MAX = 2
# Of the signatures, queued (one chunk per worker) before the spec starts: the spec
# takes ~a third of the block's CPU, so the workers are still busy when it ends.
OVERLAP_EARLY_SHARE = 0.7
# Which blocks run the optimistic mode (Block-STM, ``optimistic.py``) instead of
# the partitioned one: "auto", those holding a transaction that cannot declare its
# keys; "always", every block that would run partitioned (and, when forced, also
# those that would run overlapped): tests and benches of the mode on any call.
OPTIMISTIC_MODES = ("auto", "always")


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
        optimistic: str = "auto",
        optimistic_rounds_max: int = ROUNDS_MAX,
        optimistic_round_tasks_min: int = ROUND_TASKS_MIN,
    ) -> None:
        if optimistic not in OPTIMISTIC_MODES:
            raise ValueError(f"optimistic must be one of {OPTIMISTIC_MODES}")
        self.runner = runner
        self.optimistic = optimistic
        self.optimistic_rounds_max = optimistic_rounds_max
        self.optimistic_round_tasks_min = optimistic_round_tasks_min
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
            return SignaturePump(self.runner, shard, txs, range(len(txs))).drain()
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
        params = get_shard_params(state, header.height)
        check_block_shape(block, params)
        if (verify_signatures and self.workers <= self.overlap_workers_max
                and self.optimistic != "always"):
            return self._apply_overlapped(state, block, params)
        try:
            body = begin(state, block.inbound, header.height)
        except InvalidBlock:
            # The spec checks signatures before the inbound receipts: so do we.
            if verify_signatures:
                self._check_signatures(params, txs)
            raise
        workers = self.workers
        # One pipelined round: signature chunks start while this process plans;
        # each worker then gets its execution job and more chunks, which keep it
        # busy while this process merges and computes the roots.
        pump = SignaturePump(self.runner, params, txs,
                              range(len(txs)) if verify_signatures else range(0))
        plan: Plan | None = None
        try:
            pump.feed_all(-(-int(pump.chunks_left * EARLY_SIGNATURE_SHARE) // workers))
            plan = compute_plan(txs, params.shard, params.num_shards)
            if self._is_optimistic(plan):
                return self._apply_optimistic(body, block, plan, pump)
            assignment = compute_assignment(plan, workers, [])
            for worker, job in enumerate(
                    make_jobs(params, body.view, txs, plan, assignment, leaves=True)):
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
                results = [executed[k] for k in range(workers)]
                fold(body, txs, results, set(), None)
                merged = finish(body, block.inbound, collect_tx_leaves(results, len(txs)),
                                collect_state_leaves(results))
            except InvalidBlock as exc:
                invalid = exc
            bad = pump.drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError) as exc:
            return self._apply_spec_after(exc, state, block, verify_signatures, plan)
        finally:
            self.runner.reset()
        merged = verdict(bad, invalid, merged)
        check_header_roots(header, merged)
        self._report(compute_stats("apply", header.height, len(txs), "parallel", workers,
                                   plan, body.reexecutions))
        return merged

    def _apply_optimistic(self, body: Body, block: Block, plan: Plan,
                          pump: SignaturePump) -> BlockResult:
        """A replica's block in the optimistic mode; the signature checks queued on
        ``pump`` run between and beside the rounds. (Inside the caller's ``try``.)"""
        header = block.header
        invalid: InvalidBlock | None = None
        merged: BlockResult | None = None
        report = OptimisticReport()
        try:
            scheduler = self._run_optimistic(body, block.txs, plan, set(), pump, None,
                                             leaves=True)
            report = scheduler.report
            count = len(block.txs)
            leaves = scheduler.tx_leaves
            tx_leaves = ([leaves[i] for i in range(count)]
                         if all(i in leaves for i in range(count)) else None)
            merged = finish(body, block.inbound, tx_leaves, scheduler.state_leaves)
        except InvalidBlock as exc:
            invalid = exc
        merged = verdict(pump.drain(), invalid, merged)
        check_header_roots(header, merged)
        self._report(compute_stats("apply", header.height, len(block.txs), "optimistic",
                                   self.workers, plan, report.reexecutions, optimistic=report))
        return merged

    def _is_optimistic(self, plan: Plan) -> bool:
        return self.optimistic == "always" or bool(plan.undeclared)

    def _run_optimistic(self, body: Body, txs: Sequence[SignedTx], plan: Plan,
                        known_bad: set[int], pump: SignaturePump,
                        rejected: list[Rejected] | None, *, leaves: bool = False) -> Scheduler:
        """Block-STM over the workers (``optimistic.py``), then the spec's fold of
        the committed results; with ``rejected`` None the first invalid
        transaction raises ``InvalidBlock`` as in the spec."""

        def run_round(jobs: Sequence[Job]) -> list[JobResult]:
            for worker, job in enumerate(jobs):
                pump.add_execution(worker, job)
            results = []
            for _ in jobs:
                done = pump.next_execution(QUEUE_DEPTH_MERGING)
                if done is None:
                    raise RunnerFailed("an execution result is missing")
                results.append(done[1])
            return results

        scheduler = run_optimistic(
            body.params, MVMemory(body.view), txs, plan.declared(), known_bad, self.workers,
            run_round, stop_at_invalid=rejected is None, rounds_max=self.optimistic_rounds_max,
            round_tasks_min=self.optimistic_round_tasks_min, leaves=leaves,
        )
        results = scheduler.committed
        escaped = -1 if len(results) == len(txs) else len(results)
        fold(body, txs, [JobResult([], results, escaped)], known_bad, rejected)
        return scheduler

    def _apply_overlapped(self, state: State, block: Block, params: ShardParams) -> BlockResult:
        """The spec without signature checks here, the signature checks on the
        workers at the same time. The result is the spec's: with every signature
        good, checking them changes nothing; with a bad one, the lowest-indexed
        bad signature is the spec's verdict whatever execution found (the spec
        checks signatures right after the header checks done by the caller)."""
        txs = block.txs
        header = block.header
        pump = SignaturePump(self.runner, params, txs, range(len(txs)), guided=True)
        invalid: InvalidBlock | None = None
        result: BlockResult | None = None
        try:
            pump.feed_share(OVERLAP_EARLY_SHARE)
            try:
                result = apply_block(state, block, verify_signatures=False)
            except InvalidBlock as exc:
                invalid = exc
            # Telemetry of what a partitioned run would see, while the workers finish.
            plan = compute_plan(txs, params.shard, params.num_shards)
            bad = pump.drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError) as exc:
            return self._apply_spec_after(exc, state, block, True, None)
        finally:
            self.runner.reset()
        result = verdict(bad, invalid, result)
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
            bad = SignaturePump(self.runner, params, txs, range(len(txs))).drain()
        except (RunnerFailed, msgspec.MsgspecError, OverflowError):
            self.runner.reset()
            bad = compute_bad_signatures(txs)
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
        params = get_shard_params(state, height)
        selected = select_inbound(state, params, inbound, receipts_max)
        body = begin(state, selected, height)
        rejected: list[Rejected] = []
        plan: Plan | None = None
        report: OptimisticReport | None = None
        consumed: list[SignedTx] = []
        used = 0
        try:
            while window:
                consumed.extend(window)
                plan = compute_plan(window, params.shard, params.num_shards)
                known_bad: set[int] = set()
                if verify_signatures:
                    pump = SignaturePump(self.runner, params, window, range(len(window)))
                    known_bad = set(pump.drain())
                if self._is_optimistic(plan):
                    pump = SignaturePump(self.runner, params, window, range(0))
                    report = _add_reports(report, self._run_optimistic(
                        body, window, plan, known_bad, pump, rejected).report)
                    used = self.workers
                    window = list(islice(pending, txs_max - len(body.included)))
                    continue
                assignment = compute_assignment(plan, self.workers, [])
                jobs = make_jobs(params, body.view, window, plan, assignment, known_bad)
                used = max(used, sum(1 for e, _ in assignment if e))
                fold(body, window, self._round(jobs), known_bad, rejected)
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
        result = finish(body, selected)
        header = BlockHeader(
            shard=params.shard, height=height, view=view, prev_hash=prev_hash, time_ms=time_ms,
            proposer=proposer, tx_root=result.tx_root, inbound_root=result.inbound_root,
            receipts_root=result.receipts_root, state_root=result.state_root,
            evidence_root=EMPTY_EVIDENCE_ROOT,
        )
        reexecutions = body.reexecutions + (0 if report is None else report.reexecutions)
        self._report(compute_stats("propose", height, len(body.included),
                                   "parallel" if report is None else "optimistic", used, plan,
                                   reexecutions, optimistic=report))
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


def _add_reports(total: OptimisticReport | None, more: OptimisticReport) -> OptimisticReport:
    """Two proposal windows' reports as one."""
    if total is None:
        return more
    keys = dict(total.abort_keys)
    for key, n in more.abort_keys.items():
        keys[key] = keys.get(key, 0) + n
    return OptimisticReport(total.rounds + more.rounds, total.incarnations + more.incarnations,
                            total.aborts + more.aborts, total.reexecutions + more.reexecutions,
                            total.run_here + more.run_here, keys)


def _chain(first: Sequence[SignedTx], rest: Iterator[SignedTx]) -> Iterator[SignedTx]:
    yield from first
    yield from rest
