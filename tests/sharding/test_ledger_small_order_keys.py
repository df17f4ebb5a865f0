"""Keys anyone can spend from (issue 14, finding 5): small-order and non-canonical
addresses are refused as senders and recipients, at admission, proposal and validation."""

from __future__ import annotations

import msgspec
import pytest

from sharding.accounts import shard_of
from sharding.block import GENESIS_PREV_HASH
from sharding.executor import InvalidBlock, apply_block
from sharding.genesis import genesis_state
from sharding.parallel import InlineRunner, ParallelExecutor
from sharding.tx import (
    InvalidTx,
    SignedTx,
    Swap,
    Transfer,
    TxBody,
    check_tx_stateless,
    verify_tx_signature,
)
from tests.support.ledger import get_genesis, get_keys, make_tx, propose

CHAIN = "shardnet-local"
P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")
ORDER_8 = (
    2707385501144840649318225287225658788936804267575313519463743609750303402022
).to_bytes(32, "little")
# A small-order key of each shard's kind: the identity, order 4 (all zero), order 2
# (y = p - 1), order 8, the sign-flipped identity and a non-canonical y.
BAD_KEYS = (
    IDENTITY,
    bytes(32),
    (P - 1).to_bytes(32, "little"),
    ORDER_8,
    (1 | 1 << 255).to_bytes(32, "little"),
    (P + 5).to_bytes(32, "little"),
)


def forged_from_identity() -> SignedTx:
    """A transfer from the identity address with (R = identity, S = 0): no key signed it."""
    body = TxBody(CHAIN, IDENTITY, 0, Transfer(get_keys(0)[0].public_key, 0, 5))
    return SignedTx(body, IDENTITY + bytes(32))


def reason_of(tx: SignedTx, shard: int) -> str:
    with pytest.raises(InvalidTx) as info:
        check_tx_stateless(tx, CHAIN, shard, 2)
    return info.value.reason


def test_identity_key_forgery_is_refused() -> None:
    tx = forged_from_identity()
    shard = shard_of(IDENTITY, 2)
    assert not verify_tx_signature(tx)
    # Admission refuses it with its own reason, with or without the signature check.
    assert reason_of(tx, shard) == "small_order_key"
    with pytest.raises(InvalidTx) as info:
        check_tx_stateless(tx, CHAIN, shard, 2, verify_signatures=False)
    assert info.value.reason == "small_order_key"
    # A proposer leaves it out.
    state = genesis_state(get_genesis(), shard)
    block, _, rejected = propose(state, [tx])
    assert block.txs == [] and [r.reason for r in rejected] == ["small_order_key"]
    # Validation refuses a block that carries it: its signature never verifies, and
    # the rule holds on the paths that skip signatures (replay of committed blocks).
    with pytest.raises(InvalidBlock) as caught:
        apply_block(state, msgspec.structs.replace(block, txs=[tx]))
    assert (caught.value.tx_index, caught.value.tx_reason) == (0, "bad_signature")
    with pytest.raises(InvalidBlock) as caught:
        apply_block(state, msgspec.structs.replace(block, txs=[tx]), verify_signatures=False)
    assert (caught.value.tx_index, caught.value.tx_reason) == (0, "small_order_key")


def test_small_order_sender_is_refused() -> None:
    for key in BAD_KEYS:
        tx = SignedTx(TxBody(CHAIN, key, 0, Transfer(get_keys(0)[0].public_key, 0, 5)),
                      IDENTITY + bytes(32))
        assert reason_of(tx, shard_of(key, 2)) == "small_order_key"


def test_small_order_recipient_is_refused() -> None:
    sender = get_keys(0)[0]
    state = genesis_state(get_genesis(), 0)
    for key in BAD_KEYS:
        for call in (Transfer(key, 0, 5), Swap(key, 0, 5, 0)):
            tx = make_tx(sender, 0, call)
            assert verify_tx_signature(tx)
            assert reason_of(tx, 0) == "small_order_key"
            block, _, rejected = propose(state, [tx])
            assert block.txs == [] and [r.reason for r in rejected] == ["small_order_key"]
            with pytest.raises(InvalidBlock) as caught:
                apply_block(state, msgspec.structs.replace(block, txs=[tx]))
            assert (caught.value.tx_index, caught.value.tx_reason) == (0, "small_order_key")


def test_ordinary_recipient_is_admitted() -> None:
    sender, recipient = get_keys(0)[:2]
    check_tx_stateless(make_tx(sender, 0, Transfer(recipient.public_key, 0, 5)), CHAIN, 0, 2)


def test_parallel_executor_refuses_small_order_keys_alike() -> None:
    # The rule lives in check_tx_stateless, which the parallel workers share.
    sender, other = get_keys(0)[:2]
    state = genesis_state(get_genesis(), 0)
    executor = ParallelExecutor(InlineRunner(2), parallel_txs_min=0, parallel_unsigned=True)
    ok = make_tx(other, 0, Transfer(sender.public_key, 0, 5))
    bad = make_tx(sender, 0, Transfer(ORDER_8, 0, 5))
    block, _, rejected = executor.build_block(
        state, [ok, bad], [], height=1, view=0, prev_hash=GENESIS_PREV_HASH, time_ms=1000,
        proposer=0)
    assert block.txs == [ok] and [r.reason for r in rejected] == ["small_order_key"]
    for verify in (True, False):
        with pytest.raises(InvalidBlock) as caught:
            executor.apply_block(state, msgspec.structs.replace(block, txs=[ok, bad]),
                                 verify_signatures=verify)
        assert (caught.value.tx_index, caught.value.tx_reason) == (1, "small_order_key")
