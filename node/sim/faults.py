"""The simulator's fault model on the in-memory network.

:class:`FaultyLinks` is a ``node.p2p.memory.LinkModel`` that asks
``consensus.sim.network.FaultyNetwork.route`` (the PBFT simulator's drops, delays,
duplicates, reordering and commit-loss windows) about every message, request, answer
and gossip copy between two nodes, and shows each to an optional ``watch``. Which
kinds are on, and the partition, commit-loss and crash windows, come from one seeded
draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from consensus.sim.network import NETWORK_FAULTS, FaultyNetwork, is_commit_news
from node.p2p.memory import KIND_MESSAGE
from node.wire import CHANNEL_CONSENSUS

NodeId = tuple[int, int]  # (shard, index)


def _is_commit_news(data: Any) -> bool:
    kind, channel, payload = data
    return kind == KIND_MESSAGE and channel == CHANNEL_CONSENSUS and is_commit_news(payload)


def make_fault_network(rng: random.Random, faults: Sequence[str] | None,
                       latency_ms: tuple[int, int]) -> FaultyNetwork:
    """The kinds ``faults`` names (None: each drawn with probability 0.45), with the
    seed's drop and duplicate rates."""
    if faults is None:
        kinds = {k for k in NETWORK_FAULTS if rng.random() < 0.45}
    else:
        unknown = set(faults) - set(NETWORK_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; "
                             f"known: {', '.join(NETWORK_FAULTS)}")
        kinds = set(faults)
    drop_p = rng.choice([0.02, 0.1, 0.25]) if "drop" in kinds else 0.0
    dup_p = rng.choice([0.05, 0.2]) if "duplicate" in kinds else 0.0
    return FaultyNetwork(rng, kinds, latency_ms, drop_p, dup_p, _is_commit_news)


class FaultyLinks:
    """``LinkModel`` over a ``FaultyNetwork``; peers are libp2p peer ids."""

    def __init__(self, net: FaultyNetwork, ids: dict[str, NodeId],
                 watch: Callable[[NodeId, str, int, bytes], None] | None = None) -> None:
        self.net = net
        self.ids = ids
        self.reorders = "reorder" in net.kinds
        self.watch = watch

    def route(self, src: str, dst: str, kind: str, channel: int, data: bytes
              ) -> Sequence[float]:
        if self.watch is not None:
            self.watch(self.ids[src], kind, channel, data)
        delays = self.net.route(self.ids[src], self.ids[dst], (kind, channel, data))
        return [delay / 1000 for delay in delays]
