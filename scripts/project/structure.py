"""The round structure of a commit and of a cross-shard finality, from the real code.

Runs the whole-network simulation (``node/sim``: production nodes, ledger, relay and
PBFT on the in-memory network with virtual time) of 2 shards x R validators with a
light load of transfers (half of them cross-shard) at two one-way link latencies, and
reads, per transaction, the virtual time from its submission to its block's commit and
to the commit of the destination block that applies its receipt. CPU costs nothing in
virtual time here; the projection adds it analytically. With latencies L1 < L2:

    delays = (latency(L2) - latency(L1)) / (L2 - L1)   one-way network delays on the path
    base   = latency(L1) - delays x L1                 batching waits (block interval)

for the median commit and the median finality. Deterministic: the same seed gives the
same figures.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Any

from node.sim.network import NetworkSimConfig, NetworkSimulation
from node.sim.world import LoadItem
from node.store import BlockCommit
from sharding.block import decode_block
from sharding.tx import Transfer, TxBody, sign_tx, tx_hash

LATENCIES_MS = (10, 50)
TXS = 80
LOAD_MS = 3000


@dataclass(frozen=True)
class Structure:
    commit_delays: float  # one-way network delays from submission to commit
    commit_base_ms: float  # the rest of the median commit latency at a light load
    finality_delays: float  # from submission to the destination's commit of the receipt
    finality_base_ms: float
    runs: tuple[dict[str, Any], ...] = ()  # what each simulated run measured

    def commit_ms(self, latency_ms: float) -> float:
        return self.commit_base_ms + self.commit_delays * latency_ms

    def finality_ms(self, latency_ms: float) -> float:
        return self.finality_base_ms + self.finality_delays * latency_ms


class TimedSimulation(NetworkSimulation):
    """The network simulation with a load of transfers (``cross`` of them to the other
    shard) and, per transaction, its commit and finality times."""

    def __init__(self, config: NetworkSimConfig, cross: float) -> None:
        super().__init__(config)
        self.load = self._transfers(random.Random(f"{config.seed}/project"), cross)
        self.committed_ms: dict[bytes, int] = {}
        self.finalized_ms: dict[bytes, int] = {}

    def _transfers(self, rng: random.Random, cross: float) -> list[LoadItem]:
        c, world = self.cfg, self.world
        load = []
        nonces: dict[bytes, int] = {}
        for i in range(c.txs):
            home = i % c.shards
            key = rng.choice(world.accounts[home])
            far = rng.random() < cross and c.shards > 1
            dst = (home + 1 + rng.randrange(c.shards - 1)) % c.shards if far else home
            recipient = rng.choice(world.accounts[dst]).public_key
            nonce = nonces.get(key.public_key, 0)
            nonces[key.public_key] = nonce + 1
            tx = sign_tx(key, TxBody(world.genesis.chain_id, key.public_key, nonce,
                                     Transfer(recipient, 0, 1)))
            arrival = (i * (c.load_ms or c.fault_ms)) // c.txs
            load.append(LoadItem(arrival, tx, tx_hash(tx), home, key.public_key, nonce))
        return load

    def _on_commit(self, nid: tuple[int, int], commit: BlockCommit) -> None:
        first = commit.height == len(self.checker.cursors[nid[0]])
        super()._on_commit(nid, commit)
        if first:
            block = decode_block(commit.block)
            for tx in block.txs:
                self.committed_ms.setdefault(tx_hash(tx), self.now_ms)
            for receipt in block.inbound:
                self.finalized_ms.setdefault(receipt.origin, self.now_ms)

    def latencies(self) -> tuple[list[int], list[int]]:
        commit, final = [], []
        for item in self.load:
            if item.digest in self.committed_ms:
                commit.append(self.committed_ms[item.digest] - item.arrival_ms)
            if item.digest in self.finalized_ms:
                final.append(self.finalized_ms[item.digest] - item.arrival_ms)
        return commit, final


def simulate(validators: int, latency_ms: int, block_interval_ms: int, seed: int
             ) -> dict[str, Any]:
    config = NetworkSimConfig(seed=seed, shards=2, validators=validators, txs=TXS,
                              accounts=64, faults=(), latency_ms=(latency_ms, latency_ms),
                              load_ms=LOAD_MS, fault_ms=LOAD_MS,
                              block_interval_ms=block_interval_ms,
                              command="shardnet project")
    sim = TimedSimulation(config, cross=0.5)
    result = sim.run()
    if not result.ok:
        raise RuntimeError(f"structure simulation failed: {result.violations[:3]}")
    commit, final = sim.latencies()
    if len(commit) != TXS or not final:
        raise RuntimeError(f"structure simulation: {len(commit)} of {TXS} committed, "
                           f"{len(final)} finalized")
    return {"validators": validators, "latency_ms": latency_ms, "seed": seed,
            "commit_p50_ms": statistics.median(commit),
            "finality_p50_ms": statistics.median(final), "txs": len(commit),
            "finalized": len(final), "sim_ms": result.sim_ms}


def measure_structure(validators: int, block_interval_ms: int, seed: int = 1) -> Structure:
    low, high = (simulate(validators, latency, block_interval_ms, seed)
                 for latency in LATENCIES_MS)
    span = LATENCIES_MS[1] - LATENCIES_MS[0]
    commit_delays = (high["commit_p50_ms"] - low["commit_p50_ms"]) / span
    finality_delays = (high["finality_p50_ms"] - low["finality_p50_ms"]) / span
    return Structure(
        commit_delays=commit_delays,
        commit_base_ms=low["commit_p50_ms"] - commit_delays * LATENCIES_MS[0],
        finality_delays=finality_delays,
        finality_base_ms=low["finality_p50_ms"] - finality_delays * LATENCIES_MS[0],
        runs=(low, high))
