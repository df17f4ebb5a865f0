"""Admission against free spam and stuck transactions (issue 14 findings 1 and 2).

A real ``Admission`` on a real ``Ledger`` (the small 2-shard genesis of
``tests/support/ledger.py``) and ``Mempool``; forwarding is captured, not sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import structlog

from consensus.kernel.codec import encode
from node.admission import Admission
from node.drops import DropLog
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.parts import SystemClock
from node.wire import decode_tx_batch
from sharding.accounts import first_shard_accounts
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer, tx_hash
from tests.support.ledger import BALANCE, get_genesis, get_keys, make_tx

KEYS = get_keys(0)
STRANGERS = first_shard_accounts("never-funded", 0, 2, 50)


@dataclass
class Harness:
    admission: Admission
    ledger: Ledger
    mempool: Mempool
    metrics: NodeMetrics
    sent: list[list[bytes]] = field(default_factory=list)

    async def submit(self, *txs: SignedTx) -> list[str]:
        """The results' reasons ("" for accepted)."""
        results = await self.admission.submit([encode(tx) for tx in txs])
        return [r.error or "" for r in results]

    async def forwarded(self) -> list[list[bytes]]:
        """Every batch forwarded so far (waits for the pending forwarding round)."""
        task = self.admission._forward_task
        if task is not None:
            await task
        return self.sent


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    ledger = Ledger(get_genesis(), 0)
    mempool = Mempool(txs_max=1_000, bytes_max=1 << 22, nonce_window=100, sender_txs_max=100,
                      committed_nonce=ledger.committed_nonce, gapped_txs_max=8,
                      gapped_sender_txs_max=4)
    metrics = NodeMetrics()
    log = structlog.get_logger()
    clock = SystemClock()
    sent: list[list[bytes]] = []
    with ThreadPoolExecutor(1) as pool:
        admission = Admission(
            ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=pool, clock=clock,
            drop=DropLog(log, metrics, clock),
            forward=lambda channel, data: sent.append(decode_tx_batch(data, 1 << 22).txs),
            on_added=lambda: None, peer_batch_bytes_max=1 << 22, frame_bytes_max=1 << 22)
        yield Harness(admission, ledger, mempool, metrics, sent)
        admission.stop()


def pay(key_index: int, nonce: int, amount: int = 1) -> SignedTx:
    return make_tx(KEYS[key_index], nonce, Transfer(KEYS[5].public_key, 0, amount))


# -- finding 1: senders that cannot pay


async def test_unfunded_sender_is_refused_at_admission(harness: Harness) -> None:
    spam = make_tx(STRANGERS[0], 0, Transfer(KEYS[0].public_key, 0, 1))
    overspend = pay(1, 0, BALANCE + 1)
    assert await harness.submit(spam, overspend, pay(0, 0)) == [
        "unfunded_sender", "insufficient_balance", ""]
    assert len(harness.mempool) == 1
    text = harness.metrics.render().decode()
    assert 'shardnet_api_txs_total{result="unfunded_sender"} 1.0' in text


async def test_unfunded_txs_forwarded_by_a_peer_are_dropped_and_counted(
        harness: Harness) -> None:
    spam = [make_tx(key, 0, Transfer(KEYS[0].public_key, 0, 1)) for key in STRANGERS[:3]]
    await harness.admission._admit_forwarded([encode(tx) for tx in spam])
    assert len(harness.mempool) == 0
    text = harness.metrics.render().decode()
    assert ('shardnet_messages_dropped_total{reason="unfunded_sender",source="peer_tx"} 3.0'
            in text)


async def test_a_replica_drops_the_next_tx_of_a_sender_that_spent_its_balance(
        harness: Harness) -> None:
    """Admission's balance check is advisory (both pass against the committed state);
    once the first commits, the primary would refuse the second: a replica drops it
    instead of counting it as work the primary owes (which would start a view change)."""
    everything, more = pay(0, 0, BALANCE), pay(0, 1, 1)
    assert await harness.submit(everything, more) == ["", ""]
    ledger = harness.ledger
    proposal = ledger.propose([everything], [], height=1, view=0, time_ms=1, proposer=0,
                              txs_max=10)
    ledger.commit(proposal.payload, proposal.block_hash, 1)
    removed = harness.mempool.remove_committed([tx_hash(everything)])
    assert [(r.tx.tx_hash, r.reason) for r in removed] == [
        (tx_hash(more), "insufficient_balance")]
    assert harness.mempool.oldest_ready_arrival_ms() is None and len(harness.mempool) == 0


# -- finding 2: gapped transactions


async def test_gapped_txs_are_not_forwarded(harness: Harness) -> None:
    later = pay(0, 1)
    assert await harness.submit(later) == [""]
    assert await harness.forwarded() == []
    first = pay(0, 0)
    assert await harness.submit(first) == [""]
    # Forwarded once runnable, after the transaction that filled the gap.
    assert await harness.forwarded() == [[encode(first), encode(later)]]


async def test_a_held_tx_is_forwarded_once_a_commit_makes_it_runnable(
        harness: Harness) -> None:
    """Its gap filled through another validator: the commit, not this pool, moves the
    sender's nonce; the node's housekeeping (``expire``) notices and forwards it."""
    first, later = pay(0, 0), pay(0, 1)
    assert await harness.submit(later) == [""]
    ledger = harness.ledger
    proposal = ledger.propose([first], [], height=1, view=0, time_ms=1, proposer=0, txs_max=10)
    ledger.commit(proposal.payload, proposal.block_hash, 1)
    assert await harness.forwarded() == []
    assert harness.mempool.expire(now_ms=0, ttl_ms=60_000) == []
    assert await harness.forwarded() == [[encode(later)]]


async def test_gapped_flood_from_funded_senders_is_bounded_at_admission(
        harness: Harness) -> None:
    """Fresh keys are refused as unfunded; funded ones get the gapped share (8 here,
    4 per sender) and a 503-style refusal beyond it, while runnable ones still enter."""
    flood = [pay(i, n) for i in range(4) for n in range(1, 6)]
    reasons = await harness.submit(*flood)
    assert reasons.count("") == 8
    assert set(reasons) == {"", "sender_full", "mempool_full"}
    assert await harness.submit(*(pay(i, 0) for i in range(6))) == [""] * 6
    assert harness.mempool.gapped_count < 8  # the runnable ones made some runnable
