"""Forwarding again (issue 15, chaos ``f-partitioned`` and ``rolling-restart``): a
forward lost to a partition or to a restarting peer is repeated, a (re)connected shard
peer gets the pool, and a receiver drops what it already holds by hash.

A real ``Admission`` on a real ``Ledger`` and ``Mempool`` with a hand-set clock;
forwarding and sends to one peer are captured, not sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise

import pytest
import structlog

from consensus.kernel.codec import encode
from node import defaults
from node.admission import Admission, admit_batch
from node.drops import DropLog
from node.mempool import DuplicateTx, Mempool
from node.metrics import NodeMetrics
from node.wire import CHANNEL_TXS, decode_tx_batch
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer, tx_hash
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)
AFTER_MS = 1_000


class HandClock:
    def __init__(self) -> None:
        self.now = 0

    def monotonic_ms(self) -> int:
        return self.now

    def wall_ms(self) -> int:
        return self.now


@dataclass
class Harness:
    admission: Admission
    ledger: Ledger
    mempool: Mempool
    metrics: NodeMetrics
    clock: HandClock
    sent: list[list[bytes]] = field(default_factory=list)  # to every shard peer
    to_peer: list[tuple[int, list[bytes]]] = field(default_factory=list)  # to one
    connected: set[int] = field(default_factory=lambda: {1, 2, 3})

    async def submit(self, *txs: SignedTx) -> list[str]:
        results = await self.admission.submit([encode(tx) for tx in txs])
        return [r.error or "" for r in results]

    async def from_peer(self, *raws: bytes) -> None:
        await self.admission._admit_forwarded(list(raws))

    async def forwarded(self) -> list[list[bytes]]:
        """Batches forwarded since the last call (waits for the pending round)."""
        task = self.admission._forward_task
        if task is not None:
            await task
        sent, self.sent[:] = list(self.sent), []
        return sent

    async def resend_at(self, now_ms: int) -> list[list[bytes]]:
        self.clock.now = now_ms
        self.admission.resend(now_ms)
        return await self.forwarded()

    def peer_count(self, result: str) -> float:
        return self.metrics.registry.get_sample_value(
            "shardnet_peer_txs_total", {"result": result}) or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    ledger = Ledger(get_genesis(), 0)
    mempool = Mempool(txs_max=1_000, bytes_max=1 << 22, nonce_window=100, sender_txs_max=100,
                      committed_nonce=ledger.committed_nonce, gapped_txs_max=8,
                      gapped_sender_txs_max=4)
    metrics = NodeMetrics()
    log = structlog.get_logger()
    clock = HandClock()
    sent: list[list[bytes]] = []
    to_peer: list[tuple[int, list[bytes]]] = []
    connected = {1, 2, 3}

    def send_to(index: int, channel: int, data: bytes) -> bool:
        assert channel == CHANNEL_TXS
        to_peer.append((index, decode_tx_batch(data, 1 << 22).txs))
        return True

    with ThreadPoolExecutor(1) as pool:
        admission = Admission(
            ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=pool, clock=clock,
            drop=DropLog(log, metrics, clock),
            forward=lambda channel, data: sent.append(decode_tx_batch(data, 1 << 22).txs),
            on_added=lambda: None, peer_batch_bytes_max=1 << 22, frame_bytes_max=1 << 22,
            reforward_after_ms=AFTER_MS, send_to=send_to,
            shard_peers=lambda: frozenset(connected))
        admission.resend(0)  # the first look at the connected peers (an empty pool)
        yield Harness(admission, ledger, mempool, metrics, clock, sent, to_peer, connected)
        admission.stop()


def pay(key_index: int, nonce: int, amount: int = 1) -> SignedTx:
    return make_tx(KEYS[key_index], nonce, Transfer(KEYS[5].public_key, 0, amount))


def commit(harness: Harness, *txs: SignedTx) -> None:
    ledger = harness.ledger
    proposal = ledger.propose(list(txs), [], height=ledger.height + 1, view=0, time_ms=1,
                              proposer=0, txs_max=10)
    ledger.commit(proposal.payload, proposal.block_hash, ledger.height + 1)
    harness.mempool.remove_committed([tx_hash(tx) for tx in txs])


async def test_a_client_tx_whose_forward_was_lost_is_forwarded_again_with_doubling_intervals(
        harness: Harness) -> None:
    """The forward went into a partition: nothing tells the node, so it repeats it
    after 1 s, then 2 s, 4 s, ... later (capped), until the transaction commits."""
    tx = pay(0, 0)
    assert await harness.submit(tx) == [""]
    assert await harness.forwarded() == [[encode(tx)]]
    sent_at = []
    for now in range(0, 70_000, 250):
        if await harness.resend_at(now) == [[encode(tx)]]:
            sent_at.append(now)
    cap = defaults.MEMPOOL_REFORWARD_INTERVAL_MAX_MS
    assert sent_at[:5] == [1_000, 3_000, 7_000, 15_000, 31_000]
    assert [b - a for a, b in pairwise(sent_at[4:])] == [cap, cap]
    commit(harness, tx)
    assert await harness.resend_at(200_000) == []
    assert harness.admission._resend_at == {}  # nothing kept for it


async def test_a_gapped_client_tx_is_forwarded_again_only_once_runnable(
        harness: Harness) -> None:
    later = pay(0, 1)
    assert await harness.submit(later) == [""]
    assert await harness.resend_at(1_000) == []  # held behind its gap, not sent
    first = pay(0, 0)
    harness.clock.now = 1_500
    assert await harness.submit(first) == [""]
    assert await harness.forwarded() == [[encode(first), encode(later)]]
    assert await harness.resend_at(2_000) == [[encode(later)]]
    assert await harness.resend_at(2_500) == [[encode(first)]]


async def test_a_peers_tx_is_left_to_its_origin_to_forward_again(harness: Harness) -> None:
    """Only the node a client gave the transaction to repeats its forward (one sender
    per transaction, not one per validator); the others send it to a peer that
    reconnects."""
    await harness.from_peer(encode(pay(1, 0)))
    assert len(harness.mempool) == 1
    assert await harness.resend_at(100_000) == []


async def test_a_reconnected_shard_peer_is_sent_the_pending_runnable_txs(
        harness: Harness) -> None:
    """Rolling restart: what the replicas forwarded while the primary was down never
    reached it; once it is connected again it gets the pool's runnable transactions,
    its clients' and its peers', in nonce order (not the gapped one)."""
    mine, gapped = pay(0, 0), pay(2, 1)
    theirs = [pay(1, 0), pay(1, 1)]
    assert await harness.submit(mine, gapped) == ["", ""]
    await harness.from_peer(*(encode(tx) for tx in theirs))
    harness.connected.discard(3)  # its restart
    await harness.resend_at(100)
    assert harness.to_peer == []
    harness.connected.add(3)
    await harness.resend_at(200)
    ((peer, txs),) = harness.to_peer
    assert peer == 3
    assert sorted(txs) == sorted(encode(tx) for tx in (mine, *theirs))
    assert txs.index(encode(theirs[0])) < txs.index(encode(theirs[1]))
    await harness.resend_at(300)
    assert len(harness.to_peer) == 1  # once per connection


async def test_a_forward_of_a_tx_already_pending_is_refused_by_hash_before_its_checks(
        harness: Harness) -> None:
    """A repeated forward costs the receiver a decode and a hash: no signature check.
    A copy with a broken signature is the same transaction (the hash covers the
    body) and is refused as a duplicate, not verified."""
    tx = pay(1, 0)
    await harness.from_peer(encode(tx))
    assert harness.peer_count("accepted") == 1
    broken = SignedTx(tx.body, bytes(64))
    checked: list[int] = []

    def verify_many(checks: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        checked.append(len(checks))
        return [True] * len(checks)

    results = admit_batch(harness.ledger, [encode(tx), encode(broken)], verify_many,
                          harness.mempool.__contains__)
    assert [(t, d, type(e)) for t, d, e in results] == [(None, tx_hash(tx), DuplicateTx)] * 2
    assert checked == [0]
    await harness.from_peer(encode(tx), encode(broken))
    assert harness.peer_count("duplicate") == 2
    assert harness.peer_count("accepted") == 1
    # A client resubmitting it hears it is pending, as before.
    assert await harness.submit(tx) == ["duplicate"]
