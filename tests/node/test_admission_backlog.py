"""Forwarding again waits for the pool's backlog (issue 16, deliverable 2).

A 20,000-transaction burst was forwarded again 25,500 times while the pool drained
(each copy decoded and hashed by three peers that held it): a transaction waiting its
turn was taken for a lost forward. A transaction is now forwarded again only once older
than ``reforward_after_ms`` plus the time the pool takes to drain at the recent commit
rate (capped); with nothing committing (a partition) nothing is deferred. A real
``Admission``, ``Ledger`` and ``Mempool`` with a hand-set clock; forwards are captured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import structlog

from consensus.kernel.codec import encode
from node.admission import REFORWARD_BACKLOG_MAX_MS, Admission
from node.drops import DropLog
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.wire import decode_tx_batch
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer
from tests.node.test_admission_reforward import HandClock
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)
AFTER_MS = 1_000


@dataclass
class Harness:
    admission: Admission
    clock: HandClock
    tps: list[float]  # what drain_tps answers
    sent: list[list[bytes]] = field(default_factory=list)

    async def submit(self, *txs: SignedTx) -> None:
        results = await self.admission.submit([encode(tx) for tx in txs])
        assert all(r.accepted for r in results)

    async def forwarded(self) -> list[bytes]:
        task = self.admission._forward_task
        if task is not None:
            await task
        sent = [raw for batch in self.sent for raw in batch]
        self.sent.clear()
        return sent

    async def resend_at(self, now_ms: int) -> list[bytes]:
        self.clock.now = now_ms
        self.admission.resend(now_ms)
        return await self.forwarded()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    ledger = Ledger(get_genesis(), 0)
    mempool = Mempool(txs_max=1_000, bytes_max=1 << 22, nonce_window=100, sender_txs_max=100,
                      committed_nonce=ledger.committed_nonce)
    metrics = NodeMetrics()
    log = structlog.get_logger()
    clock = HandClock()
    tps = [0.0]
    sent: list[list[bytes]] = []
    with ThreadPoolExecutor(1) as pool:
        admission = Admission(
            ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=pool, clock=clock,
            drop=DropLog(log, metrics, clock),
            forward=lambda channel, data: sent.append(decode_tx_batch(data, 1 << 22).txs),
            on_added=lambda: None, peer_batch_bytes_max=1 << 22, frame_bytes_max=1 << 22,
            reforward_after_ms=AFTER_MS, drain_tps=lambda: tps[0])
        yield Harness(admission, clock, tps, sent)
        admission.stop()


def pay(key_index: int, nonce: int) -> SignedTx:
    return make_tx(KEYS[key_index], nonce, Transfer(KEYS[5].public_key, 0, 1))


async def test_a_tx_behind_a_draining_backlog_is_not_forwarded_again_early(
        harness: Harness) -> None:
    """100 transactions pending, 20 commit per second: the pool drains in 5 s, so
    they are forwarded again after 1 s + 5 s, not after 1 s (and not before either when
    the commit rate is looked at later)."""
    txs = [pay(k % 4, k // 4) for k in range(100)]
    await harness.submit(*txs)
    assert len(await harness.forwarded()) == 100
    harness.tps[0] = 20.0
    assert await harness.resend_at(AFTER_MS) == []
    assert await harness.resend_at(AFTER_MS + 4_999) == []
    assert sorted(await harness.resend_at(AFTER_MS + 5_000)) == sorted(map(encode, txs))


async def test_with_nothing_committing_nothing_is_deferred(harness: Harness) -> None:
    """A partition: nothing commits, so a waiting transaction may be a lost forward."""
    txs = [pay(k % 4, k // 4) for k in range(100)]
    await harness.submit(*txs)
    await harness.forwarded()
    assert len(await harness.resend_at(AFTER_MS)) == 100


async def test_the_deferral_is_capped(harness: Harness) -> None:
    """A trickle of commits behind a large pool defers by at most a minute."""
    await harness.submit(*(pay(k % 4, k // 4) for k in range(100)))
    await harness.forwarded()
    harness.tps[0] = 0.1  # 1,000 s to drain
    due = AFTER_MS + REFORWARD_BACKLOG_MAX_MS
    assert await harness.resend_at(AFTER_MS) == []
    assert await harness.resend_at(due - 1) == []
    assert len(await harness.resend_at(due)) == 100
    # Then the doubling intervals as ever (2 s after).
    assert await harness.resend_at(due + 2 * AFTER_MS - 1) == []
    assert len(await harness.resend_at(due + 2 * AFTER_MS)) == 100


async def test_a_deferred_tx_is_looked_at_again_no_sooner_than_reforward_after(
        harness: Harness) -> None:
    """The backlog estimate moves with the commit rate: an entry deferred when it came due
    is looked at again ``reforward_after_ms`` later at the earliest, not at every pass
    (with an estimate growing about as fast as time passes, every deferred entry came
    due again at each 250 ms pass: 4 % of a node's busy samples under a burst)."""
    txs = [pay(k % 4, k // 4) for k in range(100)]
    await harness.submit(*txs)
    await harness.forwarded()
    harness.tps[0] = 20.0  # 5 s to drain: due at 1 s + 5 s
    assert await harness.resend_at(AFTER_MS) == []
    harness.tps[0] = 19.0  # now 5,263 ms: old enough at 6,263, but looked at from 7,000
    assert await harness.resend_at(AFTER_MS + 5_000) == []
    assert min(due for due, _, _ in harness.admission._resend_heap) == 2 * AFTER_MS + 5_000
    assert await harness.resend_at(AFTER_MS + 5_263) == []
    assert await harness.resend_at(2 * AFTER_MS + 4_999) == []
    assert sorted(await harness.resend_at(2 * AFTER_MS + 5_000)) == sorted(map(encode, txs))
