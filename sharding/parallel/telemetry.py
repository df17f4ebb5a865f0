"""What one block's execution looked like: ``block.executed`` and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sharding.parallel.optimistic import OptimisticReport
from sharding.parallel.plan import Plan


@dataclass(frozen=True, slots=True)
class ExecutionStats:
    """What one block's execution looked like (``block.executed``, metrics)."""

    purpose: str  # "propose" or "apply"
    height: int
    txs: int
    # "parallel" (partitioned), "optimistic" (Block-STM), "overlapped", or
    # "sequential" (small block, fallback)
    mode: str
    workers: int
    components: int
    largest_component_share: float
    reexecutions: int  # transactions re-executed after one left its declaration
    hot_keys: tuple[tuple[str, int], ...]  # (key hex, transactions declaring it)
    fallback: str = ""  # why the block ran the spec (small_block, no_signatures, ...)
    # Optimistic mode: worker rounds, aborted incarnations (failed validations and
    # reads of a missing key or an ESTIMATE), and the keys that caused most aborts.
    rounds: int = 0
    aborts: int = 0
    abort_keys: tuple[tuple[str, int], ...] = ()

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
            "rounds": self.rounds,
            "aborts": self.aborts,
            "abort_keys": [list(item) for item in self.abort_keys],
        }


def compute_stats(
    purpose: str, height: int, txs_count: int, mode: str, workers: int, plan: Plan | None,
    reexecutions: int = 0, fallback: str = "", optimistic: OptimisticReport | None = None,
) -> ExecutionStats:
    rounds, aborts = 0, 0
    abort_keys: tuple[tuple[str, int], ...] = ()
    if optimistic is not None:
        rounds, aborts = optimistic.rounds, optimistic.aborts
        abort_keys = tuple((key.hex(), n) for key, n in optimistic.top_abort_keys())
    if plan is None or txs_count == 0:
        return ExecutionStats(purpose, height, txs_count, mode, workers, int(txs_count > 0),
                              float(txs_count > 0), reexecutions, (), fallback, rounds, aborts,
                              abort_keys)
    largest = max(len(c) for c in plan.components)
    return ExecutionStats(
        purpose, height, txs_count, mode, workers, len(plan.components),
        largest / txs_count, reexecutions,
        tuple((key.hex(), n) for key, n in plan.hot_keys), fallback, rounds, aborts, abort_keys,
    )


StatsSink = Callable[[ExecutionStats], None]
