"""p2p counters reach the node's Prometheus registry as increments."""

from __future__ import annotations

from node.metrics import NodeMetrics
from node.p2p_metrics import P2PMetricsExporter


def snapshot(sent: int, dropped: int, peers: int) -> dict[str, object]:
    return {
        "msgs_sent": {1: sent},
        "bytes_sent": {1: sent * 200},
        "msgs_received": {},
        "bytes_received": {},
        "drops": {"queue_full": dropped},
        "connected_peers": peers,
    }


def test_exporter_adds_differences_between_snapshots() -> None:
    metrics = NodeMetrics()
    exporter = P2PMetricsExporter(metrics)
    exporter.update(snapshot(sent=10, dropped=1, peers=3))
    exporter.update(snapshot(sent=25, dropped=1, peers=2))
    text = metrics.render().decode()
    assert 'shardnet_p2p_messages_total{channel="1",direction="sent"} 25.0' in text
    assert 'shardnet_p2p_bytes_total{channel="1",direction="sent"} 5000.0' in text
    assert 'shardnet_messages_dropped_total{reason="queue_full",source="p2p"} 1.0' in text
    assert "shardnet_peers 2.0" in text
