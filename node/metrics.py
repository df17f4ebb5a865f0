"""Prometheus metrics of one node (``GET /metrics``).

A registry per node, not the process-global one, so several nodes can live in
one test process. Names follow Prometheus conventions: unit last, ``_total``
for counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.height = Gauge("shardnet_height", "Last committed block height", registry=r)
        self.view = Gauge("shardnet_view", "Current PBFT view", registry=r)
        self.is_primary = Gauge("shardnet_is_primary", "1 when this node leads the view",
                                registry=r)
        self.view_changes = Counter("shardnet_view_changes_total", "View changes started",
                                    registry=r)
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
        self.api_requests = Counter("shardnet_api_requests_total", "HTTP requests",
                                    ["route", "status"], registry=r)
        self.messages_dropped = Counter("shardnet_messages_dropped_total",
                                        "Messages dropped, by reason", ["source", "reason"],
                                        registry=r)
        self.p2p_messages = Counter("shardnet_p2p_messages_total", "P2P messages",
                                    ["direction", "channel"], registry=r)
        self.p2p_bytes = Counter("shardnet_p2p_bytes_total", "P2P payload bytes",
                                 ["direction", "channel"], registry=r)
        self.peers = Gauge("shardnet_peers", "Connected peers", registry=r)
        self.receipts_applied = Counter("shardnet_receipts_applied_total",
                                        "Inbound cross-shard receipts applied", registry=r)
        self.receipts_emitted = Counter("shardnet_receipts_emitted_total",
                                        "Outgoing cross-shard receipts emitted", registry=r)
        self.sync_blocks = Counter("shardnet_sync_blocks_total", "Blocks applied by block sync",
                                   registry=r)
        self.executor_workers = Gauge("shardnet_executor_workers",
                                      "Workers used for the last block", registry=r)
        self.executor_components = Gauge("shardnet_executor_components",
                                         "Conflict components in the last block", registry=r)
        self.executor_largest_component_share = Gauge(
            "shardnet_executor_largest_component_share",
            "Share of the last block's transactions in its largest conflict component",
            registry=r)
        self.executor_reexecutions = Counter("shardnet_executor_reexecutions_total",
                                             "Transactions re-executed after a conflict",
                                             registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
