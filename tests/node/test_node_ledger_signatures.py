"""The node ledger's verified-signature cache: every signature is checked once per
node (at admission, or when a block carries a transaction not seen before), a copy of
verified bytes is not checked again, and a forgery is never cached or admitted."""

from __future__ import annotations

import msgspec
import pytest

import sharding.tx as tx_module
from consensus.kernel.codec import encode
from consensus.kernel.errors import ShardnetError
from sharding.block import block_hash, decode_block
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer, tx_hash
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)


def transfers(count: int) -> list[SignedTx]:
    return [make_tx(KEYS[i], 0, Transfer(KEYS[0].public_key, 0, 1)) for i in range(1, count + 1)]


def forge(tx: SignedTx) -> SignedTx:
    return msgspec.structs.replace(tx, signature=bytes(64))


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every signature check of the process, by signed transaction hash."""
    calls: list[bytes] = []
    original = tx_module.verify_tx_signature

    def counting(tx: SignedTx) -> bool:
        calls.append(tx_hash(tx))
        return original(tx)

    monkeypatch.setattr(tx_module, "verify_tx_signature", counting)
    import sharding.executor as executor_module
    monkeypatch.setattr(executor_module, "verify_tx_signature", counting)
    return calls


def propose(ledger: Ledger, txs: list[SignedTx]) -> tuple[bytes, bytes, list[str]]:
    proposal = ledger.propose(txs, [], height=1, view=0, time_ms=1, proposer=0, txs_max=100)
    return proposal.payload, proposal.block_hash, [r.reason for r in proposal.rejected]


def test_admitted_transactions_are_not_verified_again_in_a_block(
        verify_calls: list[bytes]) -> None:
    primary, replica = Ledger(get_genesis(), 0), Ledger(get_genesis(), 0)
    txs = transfers(4)
    for ledger in (primary, replica):
        for tx in txs:
            ledger.admit(encode(tx))
    assert len(verify_calls) == 8  # once per node
    payload, digest, rejected = propose(primary, txs)
    assert rejected == []
    assert replica.execute(payload, digest, 1, 0) == ""
    assert len(verify_calls) == 8


def test_a_block_verifies_unseen_transactions_once_and_a_late_copy_is_not_verified(
        verify_calls: list[bytes]) -> None:
    primary, replica = Ledger(get_genesis(), 0), Ledger(get_genesis(), 0)
    txs = transfers(3)
    for tx in txs:
        primary.admit(encode(tx))
    payload, digest, _ = propose(primary, txs)
    verify_calls.clear()
    # The PRE-PREPARE reaches the replica before the forwarded batch does.
    assert replica.execute(payload, digest, 1, 0) == ""
    assert sorted(verify_calls) == sorted(tx_hash(tx) for tx in txs)
    for tx in txs:
        assert replica.admit(encode(tx)) == tx
    assert len(verify_calls) == 3


def test_a_forged_transaction_is_left_out_of_a_proposal_and_never_cached(
        verify_calls: list[bytes]) -> None:
    ledger = Ledger(get_genesis(), 0)
    good, bad = transfers(2)
    forged = forge(bad)
    _, _, rejected = propose(ledger, [good, forged])
    assert rejected == ["bad_signature"]
    assert forged not in ledger.verified and good in ledger.verified
    with pytest.raises(ShardnetError) as caught:
        ledger.admit(encode(forged))
    assert caught.value.reason == "bad_signature"


def test_a_block_with_a_forged_transaction_is_refused(verify_calls: list[bytes]) -> None:
    primary, replica = Ledger(get_genesis(), 0), Ledger(get_genesis(), 0)
    txs = transfers(3)
    payload, _, _ = propose(primary, txs)
    tampered = msgspec.structs.replace(decode_block(payload, 1 << 24),
                                       txs=[txs[0], forge(txs[1]), txs[2]])
    reason = replica.execute(encode(tampered), block_hash(tampered), 1, 0)
    assert reason == "invalid_tx: bad signature"
    assert forge(txs[1]) not in replica.verified


def test_a_known_body_with_other_signature_bytes_in_a_block_is_refused(
        verify_calls: list[bytes]) -> None:
    """A byzantine primary re-signs nothing: it copies a body the replica has verified
    and swaps in garbage signature bytes. The block commits to those bytes (tx_root),
    so the replica must check them, not trust the body's hash."""
    primary, replica = Ledger(get_genesis(), 0), Ledger(get_genesis(), 0)
    txs = transfers(3)
    for tx in txs:
        replica.admit(encode(tx))
    payload, _, _ = propose(primary, txs)
    tampered = msgspec.structs.replace(decode_block(payload, 1 << 24),
                                       txs=[txs[0], forge(txs[1]), txs[2]])
    assert tx_hash(forge(txs[1])) == tx_hash(txs[1])  # the hash covers the body only
    assert replica.execute(encode(tampered), block_hash(tampered), 1, 0) == (
        "invalid_tx: bad signature")


def test_a_copy_with_other_signature_bytes_is_verified(verify_calls: list[bytes]) -> None:
    ledger = Ledger(get_genesis(), 0)
    (tx,) = transfers(1)
    ledger.admit(encode(tx))
    with pytest.raises(ShardnetError) as caught:
        ledger.admit(encode(forge(tx)))
    assert caught.value.reason == "bad_signature"
    assert verify_calls == [tx_hash(tx), tx_hash(forge(tx))]


def test_forwarded_copies_are_counted_by_mempool_result() -> None:
    """A peer's batch: new transactions are accepted, a copy of one already pending is a
    duplicate, one whose nonce is already used is refused; every one is counted."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import structlog

    from node.admission import Admission
    from node.drops import DropLog
    from node.mempool import Mempool
    from node.metrics import NodeMetrics
    from node.parts import SystemClock

    ledger = Ledger(get_genesis(), 0)
    mempool = Mempool(txs_max=100, bytes_max=1 << 20, nonce_window=10, sender_txs_max=10,
                      committed_nonce=lambda sender: 1 if sender == KEYS[3].public_key else 0)
    metrics = NodeMetrics()
    first, second, used = transfers(3)  # the third sender's nonce 0 is "already used"
    log = structlog.get_logger()
    with ThreadPoolExecutor(1) as pool:
        admission = Admission(ledger=ledger, mempool=mempool, metrics=metrics, log=log,
                              pool=pool, clock=SystemClock(),
                              drop=DropLog(log, metrics, SystemClock()),
                              forward=lambda channel, data: None, on_added=lambda: None,
                              peer_batch_bytes_max=1 << 20, frame_bytes_max=1 << 20)
        batch = [encode(first), encode(second), encode(first), encode(used)]
        asyncio.run(admission._admit_forwarded(batch))
    text = metrics.render().decode()
    assert 'shardnet_peer_txs_total{result="accepted"} 2.0' in text
    assert 'shardnet_peer_txs_total{result="duplicate"} 1.0' in text
    assert 'shardnet_peer_txs_total{result="wrong_nonce"} 1.0' in text
    assert len(mempool) == 2
