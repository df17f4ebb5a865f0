"""What the dashboard reads from a node's ``GET /metrics`` (Prometheus text), parsed
with prometheus_client's own parser, and the rates between two scrapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

LATENCY = "shardnet_commit_latency_seconds"


class MetricsError(ValueError):
    """The text is not Prometheus exposition, or lacks what a node always serves."""


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """One scrape: the gauges as they are, the counters as totals."""

    height: int
    view: int
    view_changes: float
    blocks_committed: float
    txs_committed: float
    latency_sum_s: float
    latency_count: float
    latency_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)
    mempool_txs: int
    peers: int


def parse_metrics(text: str) -> NodeMetrics:
    """The values the dashboard shows; MetricsError when the text does not parse or
    ``shardnet_height`` is missing (not a shardnet node)."""
    values: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name
                if name == f"{LATENCY}_bucket":
                    buckets.append((float(sample.labels["le"]), float(sample.value)))
                elif name.startswith("shardnet_") and math.isfinite(sample.value):
                    # Labelled counters (txs by outcome) are summed over their labels.
                    values[name] = values.get(name, 0.0) + float(sample.value)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise MetricsError(f"unreadable metrics: {exc}") from None
    if "shardnet_height" not in values:
        raise MetricsError("no shardnet_height in the metrics: not a shardnet node?")
    return NodeMetrics(
        height=int(values["shardnet_height"]),
        view=int(values.get("shardnet_view", 0)),
        view_changes=values.get("shardnet_view_changes_total", 0.0),
        blocks_committed=values.get("shardnet_blocks_committed_total", 0.0),
        txs_committed=values.get("shardnet_txs_committed_total", 0.0),
        latency_sum_s=values.get(f"{LATENCY}_sum", 0.0),
        latency_count=values.get(f"{LATENCY}_count", 0.0),
        latency_buckets=tuple(sorted(buckets)),
        mempool_txs=int(values.get("shardnet_mempool_txs", 0)),
        peers=int(values.get("shardnet_peers", 0)),
    )


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear inside the bucket that holds the
    q-th observation; the largest finite bound when it falls in ``+Inf``; None
    without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True, slots=True)
class Rates:
    tps: float
    latency_mean_ms: float | None
    latency_p99_ms: float | None


def _delta(now: float, before: float) -> float:
    # A counter that went down is a restarted node: count from zero.
    return now - before if now >= before else now


def rates(before: NodeMetrics, now: NodeMetrics, elapsed_s: float) -> Rates:
    """Committed tx/s and the commit latency of the transactions committed between
    two scrapes ``elapsed_s`` apart."""
    if elapsed_s <= 0:
        raise ValueError("elapsed_s must be positive")
    tps = _delta(now.txs_committed, before.txs_committed) / elapsed_s
    count = _delta(now.latency_count, before.latency_count)
    if count <= 0:
        return Rates(tps, None, None)
    mean = 1000 * _delta(now.latency_sum_s, before.latency_sum_s) / count
    restarted = now.latency_count < before.latency_count
    earlier = dict(before.latency_buckets)
    window = [(bound, total if restarted else _delta(total, earlier.get(bound, 0.0)))
              for bound, total in now.latency_buckets]
    p99 = histogram_quantile(0.99, window)
    return Rates(tps, mean, None if p99 is None else 1000 * p99)
