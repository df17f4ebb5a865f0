"""A full mempool refuses before the checks (issue 16, deliverable 2).

Under overload (60,000 transactions in one burst, a 50,000 pool) admission verified
every signature and then the mempool refused the transaction, logging one
``mempool.full`` per transaction. What cannot fit is now refused before it is decoded
or verified, with the same typed refusal per transaction and the same counters, and
logged once per batch. A real ``Admission``, ``Ledger`` and ``Mempool``; the verifier is
counted (every signature ``verify_many`` is asked about)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import structlog
from structlog.testing import capture_logs

from consensus.kernel.codec import encode
from consensus.kernel.crypto import SignatureCheck, verify_signatures
from node import admission as admission_module
from node.admission import Admission
from node.drops import DropLog
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.parts import SystemClock
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer, decode_tx
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)
POOL_TXS = 4


@dataclass
class Harness:
    admission: Admission
    mempool: Mempool
    metrics: NodeMetrics
    verified: list[int] = field(default_factory=list)  # signatures per verify call

    async def submit(self, *txs: SignedTx) -> list[str]:
        """The results' reasons ("" for accepted)."""
        results = await self.admission.submit([encode(tx) for tx in txs])
        return [r.error or "" for r in results]

    def metric(self, line: str) -> bool:
        return line in self.metrics.render().decode()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    ledger = Ledger(get_genesis(), 0)
    mempool = Mempool(txs_max=POOL_TXS, bytes_max=1 << 22, nonce_window=100,
                      sender_txs_max=100, committed_nonce=ledger.committed_nonce,
                      gapped_txs_max=2, gapped_sender_txs_max=2)
    metrics = NodeMetrics()
    log = structlog.get_logger()
    clock = SystemClock()
    with ThreadPoolExecutor(1) as pool:
        admission = Admission(
            ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=pool, clock=clock,
            drop=DropLog(log, metrics, clock), forward=lambda channel, data: None,
            on_added=lambda: None, peer_batch_bytes_max=1 << 22, frame_bytes_max=1 << 22)
        harness = Harness(admission, mempool, metrics)

        def counting(checks: Sequence[SignatureCheck]) -> list[bool]:
            harness.verified.append(len(checks))
            return verify_signatures(checks)

        admission.verify_pool.verify_many = counting  # type: ignore[method-assign]
        yield harness
        admission.stop()


def pay(key_index: int, nonce: int) -> SignedTx:
    return make_tx(KEYS[key_index], nonce, Transfer(KEYS[5].public_key, 0, 1))


async def test_what_cannot_fit_is_refused_unverified_and_logged_once(harness: Harness) -> None:
    batch = [pay(k, 0) for k in range(POOL_TXS)] + [pay(k, 1) for k in range(6)]
    with capture_logs() as logs:
        reasons = await harness.submit(*batch)
    assert reasons == [""] * POOL_TXS + ["mempool_full"] * 6
    assert sum(harness.verified) == POOL_TXS  # the refused six were never verified
    full = [e for e in logs if e["event"] == "mempool.full"]
    assert len(full) == 1 and full[0]["count"] == 6 and full[0]["txs"] == POOL_TXS
    assert harness.metric('shardnet_api_txs_total{result="mempool_full"} 6.0')
    assert harness.metric('shardnet_api_txs_total{result="accepted"} 4.0')


async def test_a_full_pool_verifies_nothing(harness: Harness) -> None:
    assert await harness.submit(*(pay(k, 0) for k in range(POOL_TXS))) == [""] * POOL_TXS
    harness.verified.clear()
    with capture_logs() as logs:
        results = await harness.admission.submit([encode(pay(k, 1)) for k in range(5)])
    assert harness.verified == []
    assert [(r.accepted, r.error, r.tx_hash) for r in results] == [
        (False, "mempool_full", None)] * 5
    assert all("refused before its checks" in (r.detail or "") for r in results)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["mempool.full"]


async def test_a_peer_batch_to_a_full_pool_is_counted_unverified(harness: Harness) -> None:
    assert await harness.submit(*(pay(k, 0) for k in range(POOL_TXS))) == [""] * POOL_TXS
    harness.verified.clear()
    await harness.admission._admit_forwarded([encode(pay(k, 1)) for k in range(3)])
    assert harness.verified == []
    assert harness.metric('shardnet_peer_txs_total{result="mempool_full"} 3.0')


async def test_batches_being_checked_hold_their_room(harness: Harness) -> None:
    """Two batches at once: the second sees the room the first may take, so only the
    first's transactions are verified (not both, then half refused)."""
    first = harness.submit(*(pay(k, 0) for k in range(POOL_TXS)))
    second = harness.submit(*(pay(k, 0) for k in range(POOL_TXS, 2 * POOL_TXS)))
    reasons = await asyncio.gather(first, second)
    assert list(reasons) == [[""] * POOL_TXS, ["mempool_full"] * POOL_TXS]
    assert sum(harness.verified) == POOL_TXS
    assert harness.admission._checking_txs == harness.admission._checking_bytes == 0


async def test_gapped_txs_count_as_room_for_a_runnable_one(harness: Harness) -> None:
    """A full pool still takes a runnable transaction when gapped ones can be evicted:
    the room counted before the checks includes them."""
    gapped = [pay(0, 2), pay(1, 2)]
    runnable = [pay(k, 0) for k in range(2, POOL_TXS)]
    assert await harness.submit(*gapped, *runnable) == [""] * POOL_TXS
    assert harness.mempool.gapped_count == 2
    assert await harness.submit(pay(4, 0)) == [""]
    assert harness.mempool.gapped_count == 1 and len(harness.mempool) == POOL_TXS


async def test_a_held_tx_forwarded_again_is_refused_without_decoding(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash is read off the bytes (``raw_tx_hash``): a copy of a transaction the
    pool holds is a duplicate before it is decoded (forwarding again sends each one
    to three peers that mostly hold it), and takes no room: the pool has two places
    left and three arrive, two of them held."""
    held = [pay(k, 0) for k in range(2)]
    assert await harness.submit(*held) == ["", ""]
    decoded: list[bytes] = []
    real = decode_tx

    def counting(raw: bytes) -> SignedTx:
        decoded.append(raw)
        return real(raw)

    monkeypatch.setattr(admission_module, "decode_tx", counting)
    new = pay(2, 0)
    await harness.admission._admit_forwarded([encode(tx) for tx in (*held, new)])
    assert decoded == [encode(new)]
    assert harness.metric('shardnet_peer_txs_total{result="duplicate"} 2.0')
    assert harness.metric('shardnet_peer_txs_total{result="accepted"} 1.0')
