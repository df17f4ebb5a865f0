"""The dashboard's pieces without a browser: metrics parsing (of what a node's own
registry renders), rates, the bounded time series, the per-shard point and the block
events kept."""

from __future__ import annotations

import json

import pytest

from node.metrics import NodeMetrics as NodeRegistry
from scripts.cli.load.targets import NodeTarget
from scripts.dashboard.aggregator import LATEST_BLOCKS, NodeView, shard_point
from scripts.dashboard.metrics import (
    MetricsError,
    histogram_quantile,
    parse_metrics,
    rates,
)
from scripts.dashboard.series import TimeSeries, downsample
from tests.dashboard.fakes import aggregator_for, block_event


def _node_text(height: int, view_changes: int, ok: int, failed: int,
               latencies_s: list[float], mempool: int = 0, peers: int = 7) -> str:
    registry = NodeRegistry()
    registry.height.set(height)
    registry.view_changes.inc(view_changes)
    registry.txs_committed.labels(outcome="ok").inc(ok)
    registry.txs_committed.labels(outcome="failed").inc(failed)
    for seconds in latencies_s:
        registry.commit_latency.observe(seconds)
    registry.mempool_txs.set(mempool)
    registry.peers.set(peers)
    return registry.render().decode()


def test_what_a_node_renders_is_read_back() -> None:
    metrics = parse_metrics(_node_text(12, 2, 90, 10, [0.1, 0.2, 0.3], mempool=5, peers=6))
    assert metrics.height == 12 and metrics.view_changes == 2
    assert metrics.txs_committed == 100  # both outcomes
    assert metrics.latency_count == 3 and metrics.latency_sum_s == pytest.approx(0.6)
    assert metrics.mempool_txs == 5 and metrics.peers == 6
    assert metrics.latency_buckets[-1] == (float("inf"), 3.0)


@pytest.mark.parametrize("text", ["not metrics at all {", "# TYPE x counter\nx 1\n", ""])
def test_text_that_is_not_a_nodes_metrics_is_refused(text: str) -> None:
    with pytest.raises(MetricsError):
        parse_metrics(text)


def test_rates_are_the_difference_between_two_scrapes() -> None:
    before = parse_metrics(_node_text(5, 0, 100, 0, [0.1] * 10))
    after = parse_metrics(_node_text(9, 0, 300, 0, [0.1] * 10 + [0.5] * 100))
    found = rates(before, after, 2.0)
    assert found.tps == 100.0
    assert found.latency_mean_ms == pytest.approx(500.0)
    assert found.latency_p99_ms is not None and 250 < found.latency_p99_ms <= 500


def test_a_restarted_node_counts_from_zero_not_negative() -> None:
    before = parse_metrics(_node_text(50, 3, 1000, 0, [0.1] * 50))
    after = parse_metrics(_node_text(51, 0, 40, 0, [0.2] * 4))
    found = rates(before, after, 1.0)
    assert found.tps == 40.0
    assert found.latency_mean_ms == pytest.approx(200.0)


def test_no_commits_means_no_latency() -> None:
    same = parse_metrics(_node_text(5, 0, 100, 0, [0.1]))
    found = rates(same, same, 1.0)
    assert found.tps == 0 and found.latency_mean_ms is None and found.latency_p99_ms is None


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    # Everything beyond the largest bound: that bound, not infinity.
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 5.0)]) == 0.1


def test_the_series_keeps_only_its_window() -> None:
    series: TimeSeries[int] = TimeSeries(window_s=10.0, max_points=1000)
    for t in range(100):
        series.append(float(t), t)
    points = series.points()
    assert [t for t, _ in points] == [float(t) for t in range(89, 100)]
    assert series.last() == 99


def test_the_series_never_holds_more_than_max_points() -> None:
    series: TimeSeries[int] = TimeSeries(window_s=1e9, max_points=50)
    for t in range(10_000):
        series.append(t / 1000, t)
    assert len(series) == 50 and series.points()[0][1] == 9950


def test_the_series_refuses_time_going_backwards() -> None:
    series: TimeSeries[int] = TimeSeries(window_s=10.0, max_points=10)
    series.append(5.0, 1)
    with pytest.raises(ValueError):
        series.append(4.0, 2)


def test_downsample_keeps_both_ends_and_the_limit() -> None:
    points = [(float(i), i) for i in range(601)]
    shown = downsample(points, 120)
    assert len(shown) == 120 and shown[0] == points[0] and shown[-1] == points[-1]
    assert [t for t, _ in shown] == sorted(t for t, _ in shown)
    assert downsample(points[:10], 120) == points[:10]


def _node(shard: int, index: int, text: str | None, tps: float | None = None) -> NodeView:
    view = NodeView(NodeTarget(f"shard{shard}-node{index}", shard, index, "http://x"))
    if text is not None:
        view.up, view.error, view.metrics = True, None, parse_metrics(text)
        if tps is not None:
            before = parse_metrics(_node_text(0, 0, 0, 0, []))
            view.rates = rates(before, parse_metrics(_node_text(0, 0, int(tps), 0, [])), 1.0)
    return view


def test_a_shard_point_comes_from_the_nodes_that_answer() -> None:
    nodes = [
        _node(0, 0, _node_text(10, 1, 0, 0, [], mempool=3, peers=7), tps=100),
        _node(0, 1, _node_text(12, 4, 0, 0, [], mempool=9, peers=5), tps=120),
        _node(0, 2, _node_text(11, 0, 0, 0, [], mempool=1, peers=7), tps=5000),  # syncing
        _node(0, 3, None),  # down
    ]
    point = shard_point(nodes)
    assert point.nodes_up == 3 and point.height == 12 and point.view_changes == 4
    assert point.tps == 120  # the median: a node catching up is no spike
    assert point.mempool == 9 and point.peers_min == 5
    assert shard_point([_node(0, 0, None)]).height is None


def test_block_events_are_kept_once_and_bounded() -> None:
    aggregator = aggregator_for(shards=2)
    for height in range(1, 3 * LATEST_BLOCKS):
        for _ in range(4):  # every node of the shard sends it
            aggregator.on_block_event(json.dumps(block_event(0, height)).encode())
    kept = aggregator.blocks[0]
    assert list(kept) == list(range(2 * LATEST_BLOCKS, 3 * LATEST_BLOCKS))
    # A node far behind sends an old block: not kept again.
    aggregator.on_block_event(json.dumps(block_event(0, 3)).encode())
    assert 3 not in kept and len(kept) == LATEST_BLOCKS
    # Out of order within the window: kept in height order.
    aggregator.on_block_event(json.dumps(block_event(1, 7)).encode())
    aggregator.on_block_event(json.dumps(block_event(1, 5)).encode())
    assert list(aggregator.blocks[1]) == [5, 7]


@pytest.mark.parametrize("data", [b"{", b"[]", b'{"shard": 0}', b"null",
                                  json.dumps({**block_event(0, 1), "txs": "x"}).encode(),
                                  json.dumps(block_event(9, 1)).encode()])
def test_a_malformed_block_event_is_counted_not_raised(data: bytes) -> None:
    aggregator = aggregator_for(shards=2)
    aggregator.on_block_event(data)
    assert aggregator.bad_events == 1
    assert all(not kept for kept in aggregator.blocks.values())
