"""Measurements, pure: the one percentile function, latency summaries, the timeline.

Percentiles are nearest-rank over every recorded value (exact, no histogram
approximation): the p-th percentile of n sorted values is the value at rank
ceil(p/100 x n), 1-based. Latencies are kept in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0 < p <= 100) of ascending ``sorted_values``;
    None when there are none."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = math.ceil(round(p / 100 * n, 9))  # round: 99.9/100*1000 is 999.0000000000001
    return sorted_values[min(n, max(1, rank)) - 1]


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, p50, p90, p99, p999, max and mean of ``values`` (ms, rounded to 0.1)."""
    ordered = sorted(values)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    summary: dict[str, float | int | None] = {"count": len(ordered)}
    for name, p in QUANTILES:
        summary[name] = r(percentile(ordered, p))
    summary["max"] = r(ordered[-1]) if ordered else None
    summary["mean"] = r(sum(ordered) / len(ordered)) if ordered else None
    return summary


def commit_rate(commit_times_s: Iterable[float]) -> float | None:
    """Commits per second while commits happened: those after the first commit time
    over the span from it to the last. The rate a step's shards committed at, not
    diluted by the latency (``tps_committed`` divides by first submission to last
    commit, so a 3 s step with 0.5 s latency read 86 % of a rate kept up with); the
    first commit time's commits open the span (block granularity: N blocks span N - 1
    intervals). None with fewer than two distinct times."""
    ordered = sorted(commit_times_s)
    if len(ordered) < 2 or ordered[-1] <= ordered[0]:
        return None
    first = ordered[0]
    after = sum(1 for t in ordered if t > first)
    return after / (ordered[-1] - first)


@dataclass(slots=True)
class Bucket:
    """One second of the run."""

    offered: float = 0.0  # arrivals the schedule asked for
    sent: int = 0
    rejected: int = 0
    committed: int = 0
    finalized: int = 0
    retries: int = 0
    errors: int = 0
    committed_by_shard: dict[int, int] = field(default_factory=dict)
    commit_ms: list[float] = field(default_factory=list)
    finality_ms: list[float] = field(default_factory=list)
    commit_ms_by_shard: dict[int, list[float]] = field(default_factory=dict)


class Timeline:
    """Per-second buckets, keyed by seconds since the start of the run."""

    def __init__(self, bucket_s: float = 1.0) -> None:
        self.bucket_s = bucket_s
        self.buckets: dict[int, Bucket] = {}

    def at(self, t: float) -> Bucket:
        key = max(0, int(t // self.bucket_s))
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket()
        return bucket

    def rows(self, shards: int) -> list[dict[str, float | int | None]]:
        """One row per bucket from 0 to the last, for timeseries.csv and the charts."""
        if not self.buckets:
            return []
        rows = []
        for key in range(max(self.buckets) + 1):
            b = self.buckets.get(key, Bucket())
            commit, finality = sorted(b.commit_ms), sorted(b.finality_ms)
            row: dict[str, float | int | None] = {
                "t_s": round(key * self.bucket_s, 3),
                "offered_tps": round(b.offered / self.bucket_s, 1),
                "sent_tps": round(b.sent / self.bucket_s, 1),
                "committed_tps": round(b.committed / self.bucket_s, 1),
                "finalized_tps": round(b.finalized / self.bucket_s, 1),
                "rejected": b.rejected, "retries": b.retries, "errors": b.errors,
                "commit_p50_ms": _ms(percentile(commit, 50) if commit else None),
                "commit_p99_ms": _ms(percentile(commit, 99) if commit else None),
                "finality_p50_ms": _ms(percentile(finality, 50) if finality else None),
                "finality_p99_ms": _ms(percentile(finality, 99) if finality else None),
            }
            for shard in range(shards):
                row[f"shard{shard}_committed_tps"] = round(
                    b.committed_by_shard.get(shard, 0) / self.bucket_s, 1)
                mine = sorted(b.commit_ms_by_shard.get(shard, []))
                row[f"shard{shard}_commit_p99_ms"] = _ms(percentile(mine, 99) if mine else None)
            rows.append(row)
        return rows


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
