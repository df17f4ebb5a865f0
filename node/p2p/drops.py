"""Counted, rate-limited drops of the p2p layer (any thread).

Every frame, message or request the layer gives up on is counted by reason in
``P2PStats.drops`` (exported as ``shardnet_p2p_dropped_total{reason}``) and logged as
``p2p.dropped``, at most once a second per (peer, reason) with the number dropped since
the last line: a misbehaving peer cannot flood the log.
"""

from __future__ import annotations

import time

from structlog.typing import FilteringBoundLogger

from node.p2p.config import P2PStats

DROP_LOG_INTERVAL_S = 1.0
DROP_LOG_KEYS_MAX = 10_000


class DropLog:
    """``drop(peer, reason)`` counts and logs; ``count(reason)`` only counts (for
    failures logged under their own event)."""

    def __init__(self, stats: P2PStats, log: FilteringBoundLogger) -> None:
        self._stats = stats
        self._log = log
        self._logged_at: dict[tuple[str, str], tuple[float, int]] = {}  # -> (at, pending)

    def __call__(self, peer: str, reason: str, count: int = 1, detail: str = "") -> None:
        now = time.monotonic()
        with self._stats.lock:
            self._stats.drops[reason] += count
            last_at, pending = self._logged_at.get((peer, reason), (0.0, 0))
            pending += count
            if now - last_at < DROP_LOG_INTERVAL_S:
                self._logged_at[(peer, reason)] = (last_at, pending)
                return
            if len(self._logged_at) >= DROP_LOG_KEYS_MAX:  # peers are not ours to bound
                self._logged_at.clear()
            self._logged_at[(peer, reason)] = (now, 0)
        self._log.warning("p2p.dropped", peer=peer, reason=reason, count=pending, detail=detail)

    def count(self, reason: str, count: int = 1) -> None:
        with self._stats.lock:
            self._stats.drops[reason] += count
