"""Prometheus metrics of one node (``GET /metrics``).

A registry per node, not the process-global one, so several nodes can live in
one test process. Names follow Prometheus conventions: unit last, ``_total``
for counters,
``_seconds`` / ``_bytes`` / ``_ratio`` for units, and no averages kept as gauges (a
ratio of two counters is computed in PromQL: ``rate(a_total) / rate(b_total)``). Each
registry also carries ``shardnet_build_info`` and prometheus_client's process and
platform collectors (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``python_info``, ...), so a scraper sees what runs and what it costs.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process collector reads /proc/self: every node of one process reports the
        # same process (the in-process simulations), each real node its own.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Info("shardnet_build", "The running shardnet build", registry=r)
        self.build_info.info(build_labels())
        self.height = Gauge("shardnet_height", "Last committed block height", registry=r)
        self.view = Gauge("shardnet_view", "Current PBFT view", registry=r)
        self.is_primary = Gauge("shardnet_is_primary", "1 when this node leads the view",
                                registry=r)
        self.view_changes = Counter("shardnet_view_changes_total", "View changes started",
                                    registry=r)
        self.blocks_rejected = Counter("shardnet_blocks_rejected_total",
                                       "Proposed blocks this replica would not vote for, by "
                                       "reason (bad_certificate, bad_proof, receipt_gap, ...)",
                                       ["reason"], registry=r)
        self.blocks_committed = Counter("shardnet_blocks_committed_total", "Blocks committed",
                                        registry=r)
        self.txs_committed = Counter("shardnet_txs_committed_total",
                                     "Transactions committed", ["outcome"], registry=r)
        self.commit_latency = Histogram(
            "shardnet_commit_latency_seconds",
            "Time from a transaction's admission at this node to its block's commit",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.block_execution = Histogram(
            "shardnet_block_execution_seconds", "Time to execute one block",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.mempool_txs = Gauge("shardnet_mempool_txs", "Transactions in the mempool",
                                 registry=r)
        self.mempool_bytes = Gauge("shardnet_mempool_bytes", "Bytes in the mempool", registry=r)
        self.txs_received = Counter("shardnet_api_txs_total", "Transactions submitted to the API",
                                    ["result"], registry=r)
        self.peer_txs = Counter("shardnet_peer_txs_total",
                                "Transactions forwarded by shard peers, by mempool result "
                                "(accepted, or the mempool's refusal reason)",
                                ["result"], registry=r)
        self.api_requests = Counter("shardnet_api_requests_total", "HTTP requests",
                                    ["route", "status"], registry=r)
        self.events_subscribers_dropped = Counter(
            "shardnet_events_subscribers_dropped_total",
            "/v1/events subscribers ended by the node, by reason (slow: fell too far behind)",
            ["reason"], registry=r)
        self.messages_dropped = Counter("shardnet_messages_dropped_total",
                                        "Messages dropped, by reason", ["source", "reason"],
                                        registry=r)
        self.p2p_messages = Counter("shardnet_p2p_messages_total", "P2P messages",
                                    ["direction", "channel"], registry=r)
        self.p2p_bytes = Counter("shardnet_p2p_bytes_total", "P2P payload bytes",
                                 ["direction", "channel"], registry=r)
        self.peers = Gauge("shardnet_peers", "Connected peers", registry=r)
        # Cross-shard receipts, per channel (docs/PROTOCOL.md section 5): ``dst`` on the
        # source shard's nodes, ``src`` on the destination's.
        self.receipts_emitted = Counter("shardnet_receipts_emitted_total",
                                        "Outgoing cross-shard receipts committed", ["dst"],
                                        registry=r)
        self.receipts_relayed = Counter("shardnet_receipts_relayed_total",
                                        "Outgoing receipts this node pushed as a relayer",
                                        ["dst"], registry=r)
        self.receipts_received = Counter("shardnet_receipts_received_total",
                                         "Proven inbound receipts, by pool result (added, "
                                         "duplicate, stale, full)", ["src", "result"],
                                         registry=r)
        self.receipts_refused = Counter("shardnet_receipts_refused_total",
                                        "Inbound bundles refused, by reason", ["src", "reason"],
                                        registry=r)
        self.receipts_applied = Counter("shardnet_receipts_applied_total",
                                        "Inbound cross-shard receipts applied", ["src"],
                                        registry=r)
        self.receipt_gaps_filled = Counter("shardnet_receipt_gaps_filled_total",
                                           "Inbound receipts fetched to fill a gap", ["src"],
                                           registry=r)
        self.receipts_in_flight = Gauge("shardnet_receipts_in_flight",
                                        "Receipts known to exist on the source and not applied "
                                        "here", ["src"], registry=r)
        self.receipt_relay_latency = Histogram(
            "shardnet_receipt_relay_seconds",
            "From the source block's header time to the receipt entering this node's pool",
            ["src"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.sync_blocks = Counter("shardnet_sync_blocks_total",
                                   "Blocks received by block sync that checked out (their "
                                   "certificates and bodies)", registry=r)
        self.sync_peer_invalid = Counter("shardnet_sync_peer_invalid_total",
                                         "Sync answers that did not check out, by peer "
                                         "(validator index) and reason", ["peer", "reason"],
                                         registry=r)
        self.executor_workers = Gauge("shardnet_executor_workers",
                                      "Workers used for the last block", registry=r)
        self.executor_components = Gauge("shardnet_executor_components",
                                         "Conflict components in the last block", registry=r)
        self.executor_largest_component_share = Gauge(
            "shardnet_executor_largest_component_ratio",
            "Share of the last block's transactions in its largest conflict component",
            registry=r)
        self.executor_reexecutions = Counter("shardnet_executor_reexecutions_total",
                                             "Transactions re-executed after a conflict",
                                             registry=r)
        self.executor_aborts = Counter("shardnet_executor_aborts_total",
                                       "Aborted incarnations of the optimistic mode (failed "
                                       "validations, reads of a missing key or an ESTIMATE)",
                                       registry=r)

        self.store_bytes = Gauge("shardnet_store_bytes",
                                 "Disk use of the node's store: the SQLite database and its "
                                 "WAL and shared-memory files (0 for an in-memory store)",
                                 registry=r)

        self.registry.register(_TraceDropsCollector())

    def watch_store_files(self, db_path: Path) -> None:
        """``shardnet_store_bytes`` reads the store's file sizes at each scrape."""
        self.store_bytes.set_function(lambda: store_files_bytes(db_path))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TraceDropsCollector:
    """Trace events the trace writer thread could not keep up with (node/logs.py)."""

    def collect(self) -> Iterator[Metric]:
        from node.logs import trace_dropped

        yield CounterMetricFamily("shardnet_log_trace_dropped",
                                  "Transaction trace events dropped: the trace writer was "
                                  "behind (its queue full)", value=trace_dropped())

    def describe(self) -> list[Metric]:
        return []


def build_labels() -> dict[str, str]:
    """``shardnet_build_info``'s labels: the installed package's version, the Python
    version, and the source commit when the environment names it (``SHARDNET_COMMIT``,
    e.g. set by an image build); ``unknown`` otherwise."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        shardnet_version = version("shardnet")
    except PackageNotFoundError:
        shardnet_version = "unknown"
    return {"version": shardnet_version, "python": platform.python_version(),
            "commit": os.environ.get("SHARDNET_COMMIT", "") or "unknown"}


def store_files_bytes(db_path: Path) -> int:
    """Bytes on disk of a SQLite database: the file, ``-wal`` and ``-shm`` (missing: 0)."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{db_path}{suffix}").st_size
    return total


class P2PCollector:
    """Exports the p2p layer's own counters (``P2PHost.stats_snapshot``) at scrape time;
    a counter an implementation does not keep (``MemoryP2P``) reads 0."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        family = CounterMetricFamily("shardnet_p2p_stream_messages",
                                     "Stream messages by direction and channel",
                                     labels=["direction", "channel"])
        for direction, key in (("out", "msgs_sent"), ("in", "msgs_received")):
            for channel, count in stats.get(key, {}).items():
                family.add_metric([direction, str(channel)], count)
        yield family
        drops = CounterMetricFamily("shardnet_p2p_dropped", "P2P frames and messages dropped",
                                    labels=["reason"])
        for reason, count in stats.get("drops", {}).items():
            drops.add_metric([reason], count)
        yield drops
        for key in ("writes", "frames_written", "reconnects", "dial_failures",
                    "heartbeat_misses", "write_timeouts", "requests_served",
                    "gossip_published", "gossip_received"):
            yield CounterMetricFamily(f"shardnet_p2p_{key}", f"p2p {key.replace('_', ' ')}",
                                      value=stats.get(key, 0))
        # Frames joined per write: rate(shardnet_p2p_frames_written_total) /
        # rate(shardnet_p2p_writes_total), not an average kept as a gauge.
        yield GaugeMetricFamily("shardnet_p2p_send_queue_frames", "Frames queued to send",
                                value=stats.get("send_queue_frames", 0))
        rtt = GaugeMetricFamily("shardnet_p2p_heartbeat_rtt_seconds",
                                "Last heartbeat round trip (PING to PONG) per peer",
                                labels=["peer"])
        for peer, rtt_ms in stats.get("heartbeat_rtt_ms", {}).items():
            rtt.add_metric([peer], rtt_ms / 1000)
        yield rtt

    def describe(self) -> list[Metric]:
        return []
