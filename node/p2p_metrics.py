"""Carry the p2p layer's cumulative counters into the node's Prometheus metrics.

``P2PHost.stats_snapshot()`` returns running totals; Prometheus counters only go up by
increments. :class:`P2PMetricsExporter` remembers the last snapshot and adds the
difference, so the node can call :meth:`update` whenever it likes (e.g. on each scrape
or once a second).
"""

from __future__ import annotations

from typing import Any

from node.metrics import NodeMetrics


class P2PMetricsExporter:
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics
        self._last: dict[tuple[str, str, str], float] = {}

    def _add(self, key: tuple[str, str, str], total: float) -> float:
        delta = total - self._last.get(key, 0)
        self._last[key] = total
        return delta if delta > 0 else 0

    def update(self, snapshot: dict[str, Any]) -> None:
        m = self.metrics
        for direction in ("sent", "received"):
            for channel, total in snapshot[f"msgs_{direction}"].items():
                delta = self._add(("msgs", direction, str(channel)), total)
                if delta:
                    m.p2p_messages.labels(direction=direction, channel=str(channel)).inc(delta)
            for channel, total in snapshot[f"bytes_{direction}"].items():
                delta = self._add(("bytes", direction, str(channel)), total)
                if delta:
                    m.p2p_bytes.labels(direction=direction, channel=str(channel)).inc(delta)
        for reason, total in snapshot["drops"].items():
            delta = self._add(("drops", "p2p", reason), total)
            if delta:
                m.messages_dropped.labels(source="p2p", reason=reason).inc(delta)
        m.peers.set(snapshot["connected_peers"])
