"""Issue 16 (the 2 x 4 latency floor): the primary's batch interval counts from its own
last proposal, so a PBFT round longer than ``consensus.block_interval_ms`` is followed
by the next proposal at once (cycle = max(round, interval)), not by one more interval
of idle waiting after the commit (cycle = round + interval); a round shorter than the
interval still waits for the interval. A real replica, ledger and driver of validator
0, the primary of view 0, of a 4-validator shard; the test holds every key and the
clock (time moves only when told), and plays the three backups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from consensus.certificate import PHASE_COMMIT, PHASE_PREPARE
from consensus.kernel.codec import encode
from consensus.kernel.crypto import verify_signature
from consensus.messages import PrePrepare, Vote, signing_digest
from consensus.replica import Replica
from node.config import parse_config
from node.driver import ConsensusDriver
from node.drops import DropLog
from node.ledger_store import open_state
from node.mempool import Mempool, PendingTx
from node.metrics import NodeMetrics
from node.parts import InlineExecutor
from node.store.memory import MemoryStore
from sharding.accounts import derive_account
from sharding.inbound import InboundPool
from sharding.ledger import Committed, Ledger
from sharding.tx import Transfer, tx_hash
from tests.node.test_node_driver_inputs import (
    KEYS,
    SHARD,
    FakeClock,
    FakeSyncer,
    Harness,
    genesis,
    replica_config,
)
from tests.support.ledger import make_tx

PRIMARY = 0
INTERVAL_MS = 200
SENDER = derive_account("load", 0)


@pytest.fixture
async def primary() -> AsyncIterator[tuple[Harness, Mempool]]:
    import structlog

    g = genesis()
    store = MemoryStore()
    state, _ = await open_state(store, g, SHARD)
    config = parse_config(f"[node]\nshard = {SHARD}\nindex = {PRIMARY}\n"
                          f"[consensus]\nblock_interval_ms = {INTERVAL_MS}\n")
    ledger = Ledger(g, SHARD, state)
    clock = FakeClock()
    metrics, log = NodeMetrics(), structlog.get_logger()
    sent: list[tuple[int, bytes]] = []
    committed: list[Committed] = []
    news = asyncio.Event()
    mempool = Mempool(txs_max=100, bytes_max=1 << 20, nonce_window=10, sender_txs_max=10,
                      committed_nonce=ledger.committed_nonce)

    def send(index: int, channel: int, data: bytes) -> bool:
        sent.append((index, data))
        news.set()
        return True

    def on_applied(c: Committed) -> None:
        mempool.remove_committed(tx_hash(tx) for tx in c.block.txs)

    def on_committed(c: Committed, cert: object) -> None:
        committed.append(c)
        news.set()

    replica = Replica(replica_config(PRIMARY, g), KEYS[PRIMARY], verify_signature, None,
                      now_ms=clock.monotonic_ms())
    driver = ConsensusDriver(
        config=config, replica=replica, ledger=ledger, store=store, mempool=mempool,
        metrics=metrics, log=log, send=send, syncer=FakeSyncer(),  # type: ignore[arg-type]
        on_committed=on_committed, on_applied=on_applied,  # type: ignore[arg-type]
        on_rejected=lambda rejected: None, ledger_pool=InlineExecutor(),
        inbound=InboundPool(), clock=clock, drop=DropLog(log, metrics, clock))
    harness = Harness(driver, ledger, metrics, clock, FakeSyncer(), sent, news, committed)
    task = asyncio.ensure_future(driver.run())
    try:
        yield harness, mempool
    finally:
        await driver.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def submit(node: Harness, mempool: Mempool, nonce: int) -> None:
    tx = make_tx(SENDER, nonce, Transfer(derive_account("load", 1).public_key, 0, 1))
    mempool.add(PendingTx(tx_hash=tx_hash(tx), sender=SENDER.public_key, nonce=nonce,
                          size_bytes=len(encode(tx)), arrival_ms=node.clock.mono, tx=tx))
    node.driver.wake()


def proposals(node: Harness) -> list[PrePrepare]:
    return [m for m in node.sent_messages() if isinstance(m, PrePrepare)]


def vote(node: Harness, phase: int, height: int, block_hash: bytes, sender: int) -> bytes:
    unsigned = Vote(SHARD, phase, 0, height, block_hash, sender, b"")  # type: ignore[arg-type]
    signature = KEYS[sender].sign(signing_digest(node.ledger.genesis.chain_id, unsigned))
    return encode(Vote(SHARD, phase, 0, height, block_hash, sender,  # type: ignore[arg-type]
                       signature))


async def agree(node: Harness, height: int, block_hash: bytes) -> None:
    """Backups 1 and 2 prepare and commit ``block_hash``: with the primary, 2f+1."""
    for phase in (PHASE_PREPARE, PHASE_COMMIT):
        for sender in (1, 2):
            node.driver.deliver(vote(node, phase, height, block_hash, sender), sender)
    await node.wait_for(lambda: len(node.committed) >= height, f"commit height {height}")


async def propose_first(node: Harness, mempool: Mempool) -> PrePrepare:
    submit(node, mempool, 0)
    node.clock.mono += INTERVAL_MS  # the interval since start-up has passed
    node.driver.wake()
    await node.wait_for(lambda: proposals(node), "propose height 1")
    (first,) = {p.height: p for p in proposals(node)}.values()
    assert first.height == 1
    return first


async def turns(count: int = 50) -> None:
    """Give the driver every chance to act (it must not: the caller checks nothing
    happened); no sleep as synchronisation, each turn yields to the loop."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_round_longer_than_the_interval_is_followed_by_the_next_proposal_at_once(
        primary: tuple[Harness, Mempool]) -> None:
    node, mempool = primary
    first = await propose_first(node, mempool)
    node.clock.mono += 2 * INTERVAL_MS + 100  # the round took 500 ms
    await agree(node, 1, first.block_hash)
    submit(node, mempool, 1)
    # The clock does not move: the interval since the proposal of height 1 has passed,
    # so height 2 is proposed now, not an interval after height 1's commit.
    await node.wait_for(lambda: any(p.height == 2 for p in proposals(node)),
                        "propose height 2 right after the commit")


async def test_a_round_shorter_than_the_interval_still_waits_for_the_interval(
        primary: tuple[Harness, Mempool]) -> None:
    node, mempool = primary
    first = await propose_first(node, mempool)
    node.clock.mono += INTERVAL_MS // 2  # the round took 100 ms
    await agree(node, 1, first.block_hash)
    submit(node, mempool, 1)
    await turns()
    assert {p.height for p in proposals(node)} == {1}
    node.clock.mono += INTERVAL_MS // 2  # an interval since the proposal of height 1
    node.driver.wake()
    await node.wait_for(lambda: any(p.height == 2 for p in proposals(node)),
                        "propose height 2 an interval after height 1's proposal")
