"""The consensus driver's own checks of untrusted input (issue 14): a fresh proposal's
header time against the node's clock (finding 8; never a certified block's), and the
inbox's byte budget (finding 7). A real replica, ledger and driver of validator 1 of a
4-validator shard, fed by a test that holds every validator key and the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from consensus.actions import Broadcast, RequestSync
from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    IndexedSignature,
    vote_digest,
)
from consensus.events import ProposalReady, SyncedBlock, SyncResult, Tick
from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair, verify_signature
from consensus.messages import CertNotice, Message, ViewChange, Vote, decode_message, signing_digest
from consensus.replica import Replica
from consensus.state import ReplicaConfig
from node.config import NodeConfig, parse_config
from node.driver import ConsensusDriver
from node.drops import DropLog
from node.ledger_store import open_state
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.parts import InlineExecutor
from node.store.memory import MemoryStore
from sharding.accounts import derive_account
from sharding.genesis import Genesis, load_genesis, make_genesis_dict
from sharding.inbound import InboundPool
from sharding.ledger import Committed, Ledger, Proposal
from sharding.tx import Transfer
from tests.support.ledger import make_tx

SHARD, ME, N = 0, 1, 4
WALL_MS = 1_800_000_000_000  # what the fake wall clock reads
AHEAD_MAX_MS = 15_000
WAIT_S = 20.0  # bound on every wait for the driver (generous: a loaded machine)
KEYS = [derive_account(f"validator-{SHARD}", i) for i in range(N)]


class FakeClock:
    """The node's Clock part with the hands in the test's: time moves only when told."""

    def __init__(self) -> None:
        self.mono = 1_000_000
        self.wall = WALL_MS

    def monotonic_ms(self) -> int:
        return self.mono

    def wall_ms(self) -> int:
        return self.wall


def genesis() -> Genesis:
    return load_genesis(make_genesis_dict(num_shards=1, validators_per_shard=N, accounts=4))


def replica_config(index: int, genesis: Genesis) -> ReplicaConfig:
    return ReplicaConfig(genesis.chain_id, SHARD, tuple(k.public_key for k in KEYS), index,
                         checkpoint_interval=16, watermark_window=64)


@dataclass
class FakeSyncer:
    """Answers a RequestSync with the certified blocks the test put here."""

    blocks: tuple[SyncedBlock, ...] = ()
    asked: list[RequestSync] = field(default_factory=list)

    async def fetch(self, action: RequestSync) -> SyncResult | None:
        self.asked.append(action)
        return SyncResult(self.blocks) if self.blocks else None


@dataclass
class Harness:
    driver: ConsensusDriver
    ledger: Ledger
    metrics: NodeMetrics
    clock: FakeClock
    syncer: FakeSyncer
    sent: list[tuple[int, bytes]]
    news: asyncio.Event  # set on every send and every commit
    committed: list[Committed]

    def sent_messages(self) -> list[Message]:
        return [decode_message(data, 64 * 1024 * 1024) for _, data in self.sent]

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def wait_for(self, condition: Any, what: str) -> None:
        """Until ``condition()`` holds, woken by each send or commit; at most WAIT_S."""
        async def until() -> None:
            while not condition():
                self.news.clear()
                await self.news.wait()
        try:
            await asyncio.wait_for(until(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"driver did not {what} within {WAIT_S} s") from None


def make_driver(config: NodeConfig, ledger: Ledger, store: MemoryStore, clock: FakeClock
                ) -> Harness:
    g = ledger.genesis
    metrics, log = NodeMetrics(), structlog.get_logger()
    sent: list[tuple[int, bytes]] = []
    committed: list[Committed] = []
    news = asyncio.Event()
    syncer = FakeSyncer()

    def send(index: int, channel: int, data: bytes) -> bool:
        sent.append((index, data))
        news.set()
        return True

    def on_committed(c: Committed, cert: CommitCertificate) -> None:
        committed.append(c)
        news.set()

    replica = Replica(replica_config(ME, g), KEYS[ME], verify_signature, None,
                      now_ms=clock.monotonic_ms())
    mempool = Mempool(txs_max=100, bytes_max=1 << 20, nonce_window=10, sender_txs_max=10,
                      committed_nonce=ledger.committed_nonce)
    driver = ConsensusDriver(
        config=config, replica=replica, ledger=ledger, store=store, mempool=mempool,
        metrics=metrics, log=log, send=send, syncer=syncer,  # type: ignore[arg-type]
        on_committed=on_committed, on_rejected=lambda rejected: None,
        ledger_pool=InlineExecutor(), inbound=InboundPool(), clock=clock,
        drop=DropLog(log, metrics, clock))
    return Harness(driver, ledger, metrics, clock, syncer, sent, news, committed)


@pytest.fixture
async def node() -> AsyncIterator[Harness]:
    g = genesis()
    store = MemoryStore()
    state, _ = await open_state(store, g, SHARD)
    config = parse_config(f"[node]\nshard = {SHARD}\nindex = {ME}\n"
                          f"[consensus]\nproposal_time_ahead_max_ms = {AHEAD_MAX_MS}\n")
    harness = make_driver(config, Ledger(g, SHARD, state), store, FakeClock())
    task = asyncio.ensure_future(harness.driver.run())
    try:
        yield harness
    finally:
        await harness.driver.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def primary_proposal(g: Genesis, time_ms: int) -> tuple[Proposal, bytes]:
    """Validator 0 (the primary of view 0) proposes height 1 with its clock at
    ``time_ms``; its replica signs the PRE-PREPARE."""
    ledger = Ledger(g, SHARD)
    tx = make_tx(derive_account("load", 0), 0, Transfer(derive_account("load", 1).public_key,
                                                        0, 1))
    proposal = ledger.propose([tx], [], height=1, view=0, time_ms=time_ms, proposer=0,
                              txs_max=10)
    replica = Replica(replica_config(0, g), KEYS[0], verify_signature, None, now_ms=0)
    replica.step(Tick(0, 0))
    actions = replica.step(ProposalReady(1, 0, proposal.payload, proposal.block_hash))
    (pre_prepare,) = [a.data for a in actions if isinstance(a, Broadcast)]
    return proposal, pre_prepare


def certificate(g: Genesis, block_hash: bytes, signers: tuple[int, ...] = (0, 2, 3)
                ) -> CommitCertificate:
    digest = vote_digest(g.chain_id, SHARD, 0, 1, block_hash, PHASE_COMMIT)
    return CommitCertificate(SHARD, 0, 1, block_hash,
                             tuple(IndexedSignature(i, KEYS[i].sign(digest)) for i in signers))


def cert_notice(g: Genesis, cert: CommitCertificate, sender: int, key: KeyPair) -> bytes:
    unsigned = CertNotice(SHARD, sender, cert, b"")
    return encode(CertNotice(SHARD, sender, cert, key.sign(signing_digest(g.chain_id, unsigned))))


def prepares(node: Harness) -> list[Vote]:
    return [m for m in node.sent_messages() if isinstance(m, Vote) and m.phase == PHASE_PREPARE]


async def test_proposal_from_the_far_future_gets_no_vote(node: Harness) -> None:
    """A PRE-PREPARE whose block is stamped an hour past this replica's clock: the
    ledger is asked with the clock, refuses it (``time_in_future``), the replica sends
    no PREPARE and starts a view change instead."""
    _, pre_prepare = primary_proposal(node.ledger.genesis, WALL_MS + 3_600_000)
    node.driver.deliver(pre_prepare, 0)
    await node.wait_for(lambda: any(isinstance(m, ViewChange) for m in node.sent_messages()),
                        "start a view change")
    assert prepares(node) == []
    assert node.counter("shardnet_blocks_rejected_total", reason="time_in_future") == 1
    assert node.ledger.height == 0


async def test_proposal_within_the_clock_bound_gets_a_vote(node: Harness) -> None:
    """The control: the same proposal stamped at the bound is voted for."""
    proposal, pre_prepare = primary_proposal(node.ledger.genesis, WALL_MS + AHEAD_MAX_MS)
    node.driver.deliver(pre_prepare, 0)
    await node.wait_for(lambda: prepares(node), "send a PREPARE")
    assert [v.block_hash for v in prepares(node)] == [proposal.block_hash] * (N - 1)
    assert node.counter("shardnet_blocks_rejected_total", reason="time_in_future") == 0


async def test_replaying_committed_blocks_ignores_the_wall_clock(node: Harness) -> None:
    """A certified block stamped a day past this node's clock (the chain ran while our
    clock was behind) is synced, executed and committed: only fresh proposals are
    judged by the clock, so a catching-up node never refuses what its shard committed."""
    g = node.ledger.genesis
    proposal, _ = primary_proposal(g, WALL_MS + 86_400_000)
    cert = certificate(g, proposal.block_hash)
    node.syncer.blocks = (SyncedBlock(1, proposal.payload, proposal.block_hash, cert),)
    node.driver.deliver(cert_notice(g, cert, 2, KEYS[2]), 2)
    await node.wait_for(lambda: node.committed, "commit the synced block")
    assert node.ledger.height == 1
    assert node.ledger.tip_hash == proposal.block_hash
    assert node.ledger.tip_time_ms == WALL_MS + 86_400_000
    assert node.counter("shardnet_blocks_rejected_total", reason="time_in_future") == 0


async def test_consensus_inbox_byte_budget_drops_over_budget_events() -> None:
    """The inbox takes peer messages up to ``consensus.inbox_bytes_max`` bytes; one past
    it is dropped (``inbox_over_budget``, counted and logged as ``pbft.dropped``), and
    the budget frees as the driver takes messages out."""
    g = genesis()
    store = MemoryStore()
    state, _ = await open_state(store, g, SHARD)
    frame = 128 * 1024
    config = parse_config(
        f"[node]\nshard = {SHARD}\nindex = {ME}\n[p2p]\nframe_bytes_max = {frame}\n"
        f"[consensus]\nblock_bytes_max = {frame // 2}\ninbox_bytes_max = {frame}\n")
    node = make_driver(config, Ledger(g, SHARD, state), store, FakeClock())
    message = b"\xc1" * 50_000  # garbage: the replica drops it as malformed once taken
    with capture_logs() as logs:
        node.driver.deliver(message, 2)
        node.driver.deliver(message, 3)
        assert node.driver.inbox_bytes == 100_000
        node.driver.deliver(message, 2)  # 150,000 > 131,072
    assert node.driver.inbox_bytes == 100_000
    assert node.counter("shardnet_messages_dropped_total", source="pbft",
                        reason="inbox_over_budget") == 1
    (event,) = [e for e in logs if e.get("reason") == "inbox_over_budget"]
    assert event["event"] == "pbft.dropped"
    assert (event["sender"], event["bytes"], event["inbox_bytes"]) == (2, 50_000, 100_000)
    # The driver takes both out (the replica drops them as malformed): room again.
    task = asyncio.ensure_future(node.driver.run())
    try:
        async def drained() -> None:
            while node.counter("shardnet_messages_dropped_total", source="pbft",
                               reason="malformed") < 2:
                await asyncio.sleep(0)
        await asyncio.wait_for(drained(), WAIT_S)
        assert node.driver.inbox_bytes == 0
        node.driver.deliver(message, 2)
        assert node.driver.inbox_bytes == 50_000
        assert node.counter("shardnet_messages_dropped_total", source="pbft",
                            reason="inbox_over_budget") == 1
    finally:
        await node.driver.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_an_inbox_budget_below_one_frame_is_a_config_error() -> None:
    """A budget that could not hold the largest message a peer may send is refused."""
    from node.config import ConfigError

    with pytest.raises(ConfigError, match="inbox_bytes_max"):
        parse_config("[node]\nshard = 0\nindex = 0\n[consensus]\ninbox_bytes_max = 1024\n")
