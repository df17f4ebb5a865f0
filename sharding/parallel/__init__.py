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
   first-write order. A transaction that reads or writes a key outside its job's
   snapshot stops its job there ("escaped", Block-STM's failed validation). The
   guard is the job's key set, not each transaction's declaration: job key sets
   are disjoint, so staying inside them is all that serial equivalence needs.
5. The merge folds the per-transaction writes into the block overlay in block
   order (which reproduces the spec's first-write order), re-executes every
   transaction from the first escaped one on in this process, stamps outgoing
   receipts (``process_stamp_receipts``: order-dependent, so done once here) and
   computes the roots as the spec does.

Why the result is the spec's: before the first escaped transaction, every
transaction touched only its job's keys, which no other job touches, and every
earlier writer of those keys ran before it in the same job, so it read exactly
the values it reads in the spec.

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

Blocks holding a call that cannot declare its keys (``declared_access`` None), or
every block with ``optimistic="always"``, run the *optimistic mode* instead
(``optimistic``: Block-STM in rounds over the workers, this process owning the
multi-version memory of ``mvmemory``; see docs/EXECUTOR.md).

Modules, one job each: ``jobs`` (what a worker receives and returns, and the
``JobRunner`` interface), ``worker`` (``run_job``: a worker's whole task),
``runners`` (``InlineRunner``), ``plan`` (components, assignment, building jobs),
``merge`` (folding job results into the block, the spec's way), ``pump`` (signature
chunks handed to free workers), ``telemetry`` (``ExecutionStats``) and ``executor``
(``ParallelExecutor``).
"""

from __future__ import annotations

from sharding.parallel.executor import PARALLEL_TXS_MIN, ParallelExecutor
from sharding.parallel.jobs import Job, JobResult, JobRunner, RunnerFailed, TxResult
from sharding.parallel.runners import InlineRunner
from sharding.parallel.telemetry import ExecutionStats, StatsSink
from sharding.parallel.worker import run_job

__all__ = [
    "PARALLEL_TXS_MIN",
    "ExecutionStats",
    "InlineRunner",
    "Job",
    "JobResult",
    "JobRunner",
    "ParallelExecutor",
    "RunnerFailed",
    "StatsSink",
    "TxResult",
    "run_job",
]
