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


def test_p2p_stream_messages_are_one_family_with_both_directions() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from node.metrics import P2PCollector

    stats = {"msgs_sent": {1: 5, 2: 3}, "msgs_received": {1: 4}, "drops": {"oversized": 2},
             "frames_per_write_avg": 1.5, "send_queue_frames": 0,
             "heartbeat_rtt_ms": {"peerA": 41.5},
             **{key: 1 for key in ("writes", "frames_written", "reconnects", "dial_failures",
                                    "heartbeat_misses", "write_timeouts", "requests_served",
                                    "gossip_published", "gossip_received")}}
    registry = CollectorRegistry()
    registry.register(P2PCollector(lambda: stats))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert text.count("# HELP shardnet_p2p_stream_messages_total") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.labels["direction"], s.labels["channel"]): s.value
               for s in families["shardnet_p2p_stream_messages"].samples}
    assert samples == {("out", "1"): 5, ("out", "2"): 3, ("in", "1"): 4}
    (rtt,) = families["shardnet_p2p_heartbeat_rtt_seconds"].samples
    assert rtt.labels == {"peer": "peerA"} and rtt.value == 0.0415
