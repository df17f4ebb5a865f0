"""GET /v1/health: ready only with a quorum of shard peers and no stalled work, 503 with
the reasons otherwise (issue 17: the compose healthcheck asks it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from consensus.kernel.errors import ShardnetError
from node.api import build_app
from node.config import parse_config
from node.drops import DropLog
from node.finality import Finality
from node.mempool import Mempool, PendingTx
from node.metrics import NodeMetrics
from node.service import HEALTH_STALLED_AFTER_MS, NodeService
from node.sim.network import NetworkSimConfig, NetworkSimulation
from node.store.memory import MemoryStore
from scripts.cli.testnet.generate import TestnetSpec, generate
from sharding.genesis import load_genesis
from sharding.ledger import Ledger


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def monotonic_ms(self) -> int:
        return self.now

    def wall_ms(self) -> int:
        return self.now


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        generate(TestnetSpec(shards=1, validators=4, accounts=4), tmp_path)
        genesis = load_genesis(tmp_path / "genesis.json")
        self.ledger = Ledger(genesis, 0)
        self.mempool = Mempool(txs_max=10, bytes_max=10_000, nonce_window=10,
                               sender_txs_max=10, committed_nonce=self.ledger.committed_nonce)
        self.clock = FakeClock()
        self.peers: frozenset[int] = frozenset()
        store = MemoryStore()

        async def no_network(shard: int, index: int, data: bytes, timeout_s: float) -> bytes:
            raise ShardnetError("no network in this test", reason="unknown_peer")

        metrics, log = NodeMetrics(), structlog.get_logger()
        replica = SimpleNamespace(me=0, view=0, primary=lambda: 0)
        driver: Any = SimpleNamespace(wake=lambda: None, replica=replica, view_changes=0)
        self.service = NodeService(
            name="shard0-node0", config=parse_config("[node]\nshard = 0\nindex = 0\n",
                                                     tmp_path),
            ledger=self.ledger, mempool=self.mempool, store=store, metrics=metrics, log=log,
            admission_pool=ThreadPoolExecutor(1), ledger_pool=ThreadPoolExecutor(1),
            forward=lambda shard, data: None, peers_connected=lambda: len(self.peers),
            finality=Finality(shard=0, index=0, validators_per_shard=[4], store=store,
                              request=no_network),
            driver=driver, relay=cast(Any, None), shard_tips={}, clock=self.clock,
            drop=DropLog(log, metrics, self.clock), send_to=lambda s, i, d: True,
            shard_peers=lambda: self.peers)

    def pend(self) -> None:
        """One executable transaction (nonce 0 of a sender) arrives now."""
        self.mempool.add(PendingTx(tx_hash=b"\x01" * 32, sender=b"\x02" * 32, nonce=0,
                                   size_bytes=100, arrival_ms=self.clock.now, tx=None))


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_node_without_a_quorum_of_shard_peers_is_not_ready(harness: Harness) -> None:
    harness.peers = frozenset({1})  # 4 validators: f = 1, 2f = 2 others needed
    health = harness.service.health()
    assert health["ready"] is False and health["reasons"] == ["no_peers"]
    assert health["shard_peers"] == 1 and health["shard_peers_needed"] == 2
    harness.peers = frozenset({1, 2})
    assert harness.service.health()["ready"] is True  # idle at height 0: nothing owed


def test_pending_work_before_the_first_commit_is_not_ready(harness: Harness) -> None:
    harness.peers = frozenset({1, 2, 3})
    harness.pend()
    assert harness.service.health()["reasons"] == ["no_commit_yet"]


def test_work_pending_with_no_commit_for_long_is_stalled(harness: Harness) -> None:
    harness.peers = frozenset({1, 2, 3})
    harness.service.last_commit_ms = harness.clock.now  # committed once, then idle
    harness.clock.now += 5 * HEALTH_STALLED_AFTER_MS
    assert harness.service.health()["ready"] is True  # idle for long: still healthy
    harness.pend()
    harness.clock.now += HEALTH_STALLED_AFTER_MS - 1
    assert harness.service.health()["ready"] is True  # not long enough yet
    harness.clock.now += 1
    health = harness.service.health()
    assert health["reasons"] == ["stalled"]
    assert health["pending_ready_ms"] == HEALTH_STALLED_AFTER_MS
    harness.service.last_commit_ms = harness.clock.now  # a commit: the height advances
    assert harness.service.health()["ready"] is True


async def test_the_route_answers_503_with_the_reasons_then_200(harness: Harness) -> None:
    app = build_app(harness.service, body_bytes_max=1024, batch_txs_max=3)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/health")
        assert response.status == 503
        assert (await response.json())["reasons"] == ["no_peers"]
        harness.peers = frozenset({1, 2, 3})
        response = await client.get("/v1/health")
        assert response.status == 200
        body = await response.json()
        assert body["ready"] is True and body["reasons"] == []


def test_every_node_of_a_simulated_network_turns_ready_with_its_commits() -> None:
    """The whole network in one process (node/sim/): real peers, real commits. Each
    node's health is read whenever any node commits."""
    sim = NetworkSimulation(NetworkSimConfig(seed=3, txs=8))
    seen: dict[Any, list[dict[str, Any]]] = {}
    on_commit = sim._on_commit

    def observe(nid: Any, commit: Any) -> None:
        on_commit(nid, commit)
        for other, member in list(sim.members.items()):
            running = getattr(member.node, "running", None)
            if running is not None:
                seen.setdefault(other, []).append(running.service.health())

    sim._on_commit = observe  # type: ignore[method-assign]
    result = sim.run()
    assert result.ok, result.describe()
    assert len(seen) == 8  # 2 shards x 4 validators
    for nid, healths in seen.items():
        assert healths and healths[-1]["ready"] is True, (nid, healths[-1])
        assert healths[-1]["height"] > 0
    # The first block's transactions were pending on the shard's nodes before it committed.
    assert any("no_commit_yet" in h["reasons"] for hs in seen.values() for h in hs)
