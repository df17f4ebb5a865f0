"""The node's one way of reporting what it drops from peers and clients.

Every drop is counted (``shardnet_messages_dropped_total{source, reason}``); the
first few per reason each second are logged as ``{source}.dropped`` (routine
reasons, such as retransmits of committed heights, at debug level). The p2p host
keeps its own counters (``shardnet_p2p_dropped_total``).
"""

from __future__ import annotations

from typing import Any

from node.metrics import NodeMetrics
from node.parts import Clock

QUIET_DROP_REASONS = frozenset({"stale", "duplicate", "old_view"})


class DropLog:
    def __init__(self, log: Any, metrics: NodeMetrics, clock: Clock, per_second: int = 5
                 ) -> None:
        self.log, self.metrics, self.clock, self.per_second = log, metrics, clock, per_second
        self._window: dict[str, tuple[int, int]] = {}

    def __call__(self, source: str, reason: str, **fields: Any) -> None:
        self.metrics.messages_dropped.labels(source=source, reason=reason).inc()
        second = self.clock.monotonic_ms() // 1000
        start, count = self._window.get(reason, (second, 0))
        if start != second:
            start, count = second, 0
        self._window[reason] = (start, count + 1)
        if count < self.per_second:
            emit = self.log.debug if reason in QUIET_DROP_REASONS else self.log.warning
            emit(f"{source}.dropped", reason=reason, **fields)

    def count(self, source: str, reason: str) -> None:
        """Counted only: drops expected in bulk (a peer's copy of a transaction
        already refused here) or logged by the caller under their own event."""
        self.metrics.messages_dropped.labels(source=source, reason=reason).inc()
