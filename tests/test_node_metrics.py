from __future__ import annotations

from node.metrics import NodeMetrics


def test_metrics_render_in_prometheus_text_and_are_per_node() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.height.set(7)
    first.messages_dropped.labels(source="p2p", reason="bad_signature").inc()
    text = first.render().decode()
    assert "shardnet_height 7.0" in text
    assert 'shardnet_messages_dropped_total{reason="bad_signature",source="p2p"} 1.0' in text
    assert "shardnet_height 0.0" in second.render().decode()
