"""The optimistic mode (Block-STM, Gelashvili et al. 2022, arXiv 2203.06871) for
transactions whose accesses are known only while they run (``declared_access``
returns None), or for every transaction when forced.

Block-STM runs on threads sharing one multi-version memory; CPython's GIL makes
threads useless for execution here, so the design is Block-STM *in rounds over
processes*, with this process as the scheduler and the owner of the memory:

- ``MVMemory`` (``mvmemory.py``) holds per (key, transaction index) the value of the
  latest incarnation, or an ESTIMATE once that incarnation was aborted.
- A round hands incarnations (``Task``) to the workers, one job per worker. A task
  carries a snapshot: for each key this transaction is expected to touch (its
  declared keys when it has them, the keys its previous incarnations read and
  wrote, a key it missed) the value it would read in the memory now, with its
  version. The worker runs a job's tasks in index order, each also seeing the
  writes of the job's earlier tasks (the newer version wins), and returns each
  incarnation's read set (key -> version) and write set (``run_tasks``). A read of
  a key the snapshot lacks, or of an ESTIMATE, stops that incarnation (a
  dependency, like Block-STM's read of an ESTIMATE).
- After the round this process records the write sets and validates in the preset
  (block) order from the lowest uncommitted index: an incarnation is valid when
  every key it read still has, in the memory, the version it read. A valid
  incarnation at the commit point is final (every lower index is final, so it read
  the spec's values); an invalid one is aborted (its writes become ESTIMATEs, its
  next incarnation gets the keys it touched as snapshot) and runs again.
- Rounds after the first group the aborted incarnations by the keys they touched
  (union-find, like ``plan.compute_plan``) so that dependent ones run in one job,
  in order. After ``ROUNDS_MAX`` rounds, or when fewer than ``ROUND_TASKS_MIN``
  incarnations are left, this process finishes the block itself: in order, a valid
  incarnation commits, any other runs here over the memory with every lower index
  final (``ExactReader``), which is the spec's execution (the scheduler
  "collaborates", as Block-STM's threads do).

Correctness rests on the validation alone: the snapshots and the job grouping only
decide how often an incarnation must run again. A transaction is a deterministic
function of the values it reads, so a committed incarnation's outcome, receipts
and writes are the spec's; the merge (``merge.fold``) then folds them in block
order, which gives the spec's write order, invalid transactions and verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sharding.accounts import shard_of
from sharding.parallel.jobs import Job, JobResult, Task, TaskResult, TxResult
from sharding.parallel.mvmemory import ExactReader, MVMemory
from sharding.parallel.worker import RAN, run_tx
from sharding.records import ShardParams, account_key
from sharding.state import Leaf, Overlay
from sharding.tx import SignedTx

ROUNDS_MAX = 3  # worker rounds per block before this process finishes it
ROUND_TASKS_MIN = 16  # fewer incarnations left than this: not worth a round trip
ABORT_KEYS_MAX = 3

RoundRunner = Callable[[Sequence[Job]], list[JobResult]]


# ---------------------------------------------------------------------------
# Scheduler side (the calling process)


@dataclass(slots=True)
class OptimisticReport:
    """What the optimistic mode did for one block (``ExecutionStats``)."""

    rounds: int = 0
    incarnations: int = 0  # run on workers or here
    aborts: int = 0  # failed validations and stopped incarnations
    reexecutions: int = 0  # incarnations after a transaction's first
    run_here: int = 0  # incarnations this process ran (exact)
    abort_keys: dict[bytes, int] = field(default_factory=dict)

    def top_abort_keys(self) -> list[tuple[bytes, int]]:
        ordered = sorted(self.abort_keys.items(), key=lambda item: (-item[1], item[0]))
        return ordered[:ABORT_KEYS_MAX]


def hint_keys(tx: SignedTx, declared: frozenset[bytes] | None, params: ShardParams
              ) -> set[bytes]:
    """The keys a first incarnation's snapshot carries: the declared ones, or (a
    call that cannot declare) the sender's account, which every transaction reads."""
    if declared is not None:
        return set(declared)
    if shard_of(tx.body.sender, params.num_shards) != params.shard:
        return set()
    return {account_key(tx.body.sender)}


class Scheduler:
    """One block's (or proposal window's) optimistic execution: ``run`` returns the
    committed ``TxResult`` of each transaction in order (up to the first invalid
    one when ``stop_at_invalid``: a replica's block is invalid there)."""

    def __init__(self, params: ShardParams, memory: MVMemory, txs: Sequence[SignedTx],
                 hints: Sequence[set[bytes]], known_bad: set[int], workers: int,
                 run_round: RoundRunner, *, stop_at_invalid: bool,
                 rounds_max: int = ROUNDS_MAX, round_tasks_min: int = ROUND_TASKS_MIN,
                 leaves: bool = False) -> None:
        self.params, self.memory, self.txs = params, memory, txs
        self.hints = [set(h) for h in hints]
        self.known_bad, self.workers, self.run_round = known_bad, workers, run_round
        self.stop_at_invalid = stop_at_invalid
        self.rounds_max, self.round_tasks_min = rounds_max, round_tasks_min
        self.leaves = leaves
        # With ``leaves``: the workers' tree leaves (tx root) and per-key state
        # leaves (state root), the later rounds' over the earlier ones.
        self.tx_leaves: dict[int, bytes] = {}
        self.state_leaves: dict[bytes, Leaf] = {}
        count = len(txs)
        self.incarnation = [-1] * count
        self.reads: list[list[tuple[bytes, int, int]] | None] = [None] * count
        self.results: list[TxResult | None] = [None] * count
        self.ran_here = [False] * count  # exact: final once its turn comes
        self.commit = 0
        self.report = OptimisticReport()
        self.committed: list[TxResult] = []  # ``run``'s result

    # -- rounds

    def pending(self) -> list[int]:
        """Uncommitted transactions with no incarnation to validate."""
        return [i for i in range(self.commit, len(self.txs)) if self.results[i] is None]

    def run(self) -> list[TxResult]:
        count = len(self.txs)
        while self.commit < count and not self._stopped():
            tasks = self.pending()
            last = (not tasks or self.report.rounds >= self.rounds_max
                    or len(tasks) < self.round_tasks_min)
            if not last:
                self._round(tasks)
            self._validate(finish=last)
        end = self.commit
        return [result for result in self.results[:end] if result is not None]

    def _stopped(self) -> bool:
        if not self.stop_at_invalid or self.commit == 0:
            return False
        last = self.results[self.commit - 1]
        return last is not None and bool(last.invalid)

    def _groups(self, tasks: list[int]) -> list[list[int]]:
        """The first round: the preset order cut into equal consecutive runs (what
        Block-STM's threads take from its execution index). Later rounds: the
        incarnations under "touched a common key", so that dependent ones run in
        one job, in order."""
        if self.report.rounds == 0:
            size = -(-len(tasks) // self.workers)
            return [tasks[k:k + size] for k in range(0, len(tasks), size)]
        parent = {i: i for i in tasks}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner: dict[bytes, int] = {}
        for i in tasks:
            for key in self.hints[i]:
                first = owner.setdefault(key, i)
                a, b = find(first), find(i)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        components: dict[int, list[int]] = {}
        for i in tasks:
            components.setdefault(find(i), []).append(i)
        jobs: list[list[int]] = [[] for _ in range(self.workers)]
        for component in sorted(components.values(), key=len, reverse=True):
            min(jobs, key=len).extend(component)
        return [sorted(job) for job in jobs if job]

    def _snapshot(self, index: int) -> list[tuple[bytes, bytes | None, int, int]]:
        """The values ``index`` would read now (the writes of this round's
        incarnations were cleared: a job's earlier task supplies its fresh write,
        and a key it no longer writes is read below it)."""
        snapshot = []
        for key in sorted(self.hints[index]):
            (writer, incarnation), value = self.memory.read(key, index)
            snapshot.append((key, value, writer, incarnation))
        return snapshot

    def _round(self, tasks: list[int]) -> None:
        params = self.params
        jobs = []
        for i in tasks:
            self.memory.clear(i)
        for group in self._groups(tasks):
            job_tasks = []
            for i in group:
                self.incarnation[i] += 1
                job_tasks.append(Task(i, self.incarnation[i], self.txs[i], i in self.known_bad,
                                      self._snapshot(i)))
            jobs.append(Job(params.chain_id, params.shard, params.num_shards, [], [], [], [], [],
                            [], leaves=self.leaves, height=params.height, tasks=job_tasks))
        self.report.rounds += 1
        self.report.incarnations += len(tasks)
        self.report.reexecutions += sum(1 for i in tasks if self.incarnation[i] > 0)
        for job_result in self.run_round(jobs):
            for done in job_result.tasks:
                self._take(done)
            self.tx_leaves.update(job_result.tx_leaves)
            for key, value, bucket, entry in job_result.state_leaves:
                self.state_leaves[key] = (value, bucket, entry)

    def _take(self, done: TaskResult) -> None:
        i = done.index
        if done.incarnation != self.incarnation[i]:
            return  # cannot happen: one incarnation per round
        if done.status == RAN and done.result is not None:
            self.memory.record(i, done.incarnation, done.result.writes)
            self.results[i] = done.result
            self.reads[i] = done.reads  # its keys join the hints if it aborts
            return
        # Stopped: a dependency (a key it lacked, an ESTIMATE) or something only the
        # spec may raise. Its previous writes, if any, stay ESTIMATEs.
        self.report.aborts += 1
        if done.key:
            self.hints[i].add(done.key)
            self.report.abort_keys[done.key] = self.report.abort_keys.get(done.key, 0) + 1

    # -- validation, in the preset order

    def _invalid_reads(self, index: int) -> list[bytes]:
        """The keys whose version changed since ``index`` read them (empty: valid)."""
        reads = self.reads[index]
        if reads is None:
            return [b""]
        return self.memory.changed(index, reads)

    def _validate(self, *, finish: bool) -> None:
        """Validate every uncommitted incarnation in order; commit the valid prefix.
        With ``finish``, run here (exactly) each transaction the commit point
        reaches without a valid incarnation."""
        for i in range(self.commit, len(self.txs)):
            if self._stopped():
                return
            if self.results[i] is not None and not self.ran_here[i]:
                changed = self._invalid_reads(i)
                if changed:
                    self._abort(i, changed)
            if self.results[i] is not None:
                if i == self.commit:
                    self.commit += 1
                continue
            if finish and i == self.commit:
                self._run_here(i)
                self.commit += 1

    def _abort(self, index: int, keys: list[bytes]) -> None:
        self.report.aborts += 1
        for key in keys:
            if key:
                self.report.abort_keys[key] = self.report.abort_keys.get(key, 0) + 1
        hints = self.hints[index]
        for key, _, _ in self.reads[index] or ():
            hints.add(key)
        hints.update(self.memory.written(index))
        self.memory.mark_estimates(index)
        self.results[index] = None
        self.reads[index] = None

    def _run_here(self, index: int) -> None:
        """Every lower index is final: this is the spec's execution of ``index``."""
        self.incarnation[index] += 1
        self.report.incarnations += 1
        self.report.run_here += 1
        if self.incarnation[index] > 0:
            self.report.reexecutions += 1
        reader = ExactReader(self.memory, index)
        result = run_tx(Overlay(reader), self.params, self.txs[index], index,
                        index in self.known_bad)
        self.memory.record(index, self.incarnation[index], result.writes)
        self.results[index] = result
        self.ran_here[index] = True


def run_optimistic(params: ShardParams, memory: MVMemory, txs: Sequence[SignedTx],
                   declared: Sequence[frozenset[bytes] | None], known_bad: set[int],
                   workers: int, run_round: RoundRunner, *, stop_at_invalid: bool,
                   rounds_max: int = ROUNDS_MAX, round_tasks_min: int = ROUND_TASKS_MIN,
                   leaves: bool = False) -> Scheduler:
    """The block's scheduler after ``run``: ``results`` (committed, in block
    order; see ``Scheduler``), ``report`` and, with ``leaves``, the workers'
    leaves."""
    hints = [hint_keys(tx, keys, params) for tx, keys in zip(txs, declared, strict=True)]
    scheduler = Scheduler(params, memory, txs, hints, known_bad, workers, run_round,
                          stop_at_invalid=stop_at_invalid, rounds_max=rounds_max,
                          round_tasks_min=round_tasks_min, leaves=leaves)
    scheduler.committed = scheduler.run()
    return scheduler
