"""Transactions: encoding, signing, hashing and admission (PROTOCOL.md sections 1-2)."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.codec import U64_MAX, encode
from consensus.kernel.crypto import TAG_TX, tagged_hash
from consensus.kernel.errors import DecodeError, OversizedError
from consensus.kernel.limits import TX_BYTES_MAX
from sharding.genesis import Genesis, genesis_state
from sharding.tx import (
    AddLiquidity,
    Call,
    InvalidTx,
    RemoveLiquidity,
    SignedTx,
    Swap,
    Transfer,
    TxBody,
    check_tx_nonce,
    check_tx_stateless,
    decode_tx,
    sign_tx,
    tx_hash,
    verify_tx_signature,
)
from tests.support.ledger import get_genesis, get_keys, get_pool_on, make_tx

CHAIN = "shardnet-local"


def a_tx(nonce: int = 0, call: Call | None = None) -> SignedTx:
    key = get_keys(0)[0]
    return make_tx(key, nonce, call or Transfer(get_keys(0)[1].public_key, 0, 5))


def stateless(tx: SignedTx, shard: int = 0) -> None:
    check_tx_stateless(tx, CHAIN, shard, 2)


def test_signed_tx_round_trips_through_bytes() -> None:
    for call in (
        Transfer(bytes(32), 1, 7),
        Swap(bytes(32), 0, 10, 3),
        AddLiquidity(bytes(32), 1, 2, 0),
        RemoveLiquidity(bytes(32), 5, 0, 0),
    ):
        tx = a_tx(call=call)
        assert decode_tx(encode(tx)) == tx


def test_call_union_is_tagged_by_its_first_array_element() -> None:
    assert msgspec.msgpack.decode(encode(Transfer(bytes(32), 1, 7)))[0] == 0
    assert msgspec.msgpack.decode(encode(Swap(bytes(32), 0, 1, 1)))[0] == 1


def test_tx_hash_is_tagged_hash_of_the_encoded_body() -> None:
    tx = a_tx()
    assert tx_hash(tx) == tagged_hash(TAG_TX, encode(tx.body))
    assert tx_hash(a_tx(nonce=1)) != tx_hash(tx)


def test_signature_verifies_and_breaks_when_the_body_changes() -> None:
    tx = a_tx()
    assert verify_tx_signature(tx)
    forged = SignedTx(TxBody(tx.body.chain_id, tx.body.sender, 1, tx.body.call), tx.signature)
    assert not verify_tx_signature(forged)


def test_sign_tx_refuses_a_key_that_is_not_the_sender() -> None:
    body = a_tx().body
    with pytest.raises(ValueError):
        sign_tx(get_keys(0)[1], body)


def test_decode_rejects_oversized_bytes_before_decoding() -> None:
    with pytest.raises(OversizedError) as info:
        decode_tx(b"\x00" * (TX_BYTES_MAX + 1))
    assert info.value.reason == "oversized"


def test_decode_rejects_negative_amount() -> None:
    raw = msgspec.msgpack.encode(
        [[CHAIN, bytes(32), 0, [0, bytes(32), 0, -1]], bytes(64)]
    )
    with pytest.raises(DecodeError) as info:
        decode_tx(raw)
    assert info.value.reason == "malformed"


def test_decode_rejects_short_address() -> None:
    raw = msgspec.msgpack.encode([[CHAIN, bytes(31), 0, [0, bytes(32), 0, 1]], bytes(64)])
    with pytest.raises(DecodeError):
        decode_tx(raw)


def test_decode_rejects_unknown_call_tag() -> None:
    raw = msgspec.msgpack.encode([[CHAIN, bytes(32), 0, [9, bytes(32), 0, 1]], bytes(64)])
    with pytest.raises(DecodeError):
        decode_tx(raw)


def test_decode_rejects_non_canonical_encoding() -> None:
    tx = a_tx()
    raw = bytearray(encode(tx))
    # Re-encode the nonce 0 (positive fixint 0x00) as uint8 0xcc 0x00: same value, longer.
    body = msgspec.msgpack.encode(tx.body)
    assert raw.startswith(b"\x92" + body[:1])
    index = raw.index(b"\x00", 1 + 1 + len(CHAIN) + 1 + 2 + 32)
    patched = bytes(raw[:index]) + b"\xcc\x00" + bytes(raw[index + 1 :])
    with pytest.raises(DecodeError):
        decode_tx(patched)


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else escapes and fails
        decode_tx(data)


@given(st.data())
def test_mutated_tx_bytes_raise_only_decode_error_or_decode(data: st.DataObject) -> None:
    raw = bytearray(encode(a_tx()))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode_tx(bytes(raw))


# -- stateless admission: each rejection by its reason


def test_accepts_a_good_transaction() -> None:
    stateless(a_tx())


def test_rejects_bad_signature() -> None:
    tx = a_tx()
    with pytest.raises(InvalidTx) as info:
        stateless(SignedTx(tx.body, bytes(64)))
    assert info.value.reason == "bad_signature"


def test_rejects_wrong_chain() -> None:
    tx = make_tx(get_keys(0)[0], 0, Transfer(bytes(32), 0, 1), chain_id="other-chain")
    with pytest.raises(InvalidTx) as info:
        stateless(tx)
    assert info.value.reason == "wrong_chain"


def test_rejects_wrong_shard() -> None:
    with pytest.raises(InvalidTx) as info:
        stateless(a_tx(), shard=1)
    assert info.value.reason == "wrong_shard"


def test_rejects_malformed_amount_built_in_python() -> None:
    key = get_keys(0)[0]
    body = TxBody(CHAIN, key.public_key, 0, Transfer(bytes(32), 0, U64_MAX + 1))
    tx = SignedTx(body, bytes(64))
    with pytest.raises(InvalidTx) as info:
        stateless(tx)
    assert info.value.reason == "malformed"


def test_rejects_malformed_address_built_in_python() -> None:
    tx = a_tx(call=Transfer(bytes(5), 0, 1))
    with pytest.raises(InvalidTx) as info:
        stateless(tx)
    assert info.value.reason == "malformed"


def test_rejects_last_possible_nonce_as_malformed() -> None:
    with pytest.raises(InvalidTx) as info:
        stateless(a_tx(nonce=U64_MAX))
    assert info.value.reason == "malformed"


def test_rejects_zero_amount() -> None:
    with pytest.raises(InvalidTx) as info:
        stateless(a_tx(call=Transfer(bytes(32), 0, 0)))
    assert info.value.reason == "zero_amount"


def test_rejects_liquidity_call_on_a_remote_pool() -> None:
    remote = get_pool_on(1).address
    with pytest.raises(InvalidTx) as info:
        stateless(a_tx(call=AddLiquidity(remote, 10, 10, 0)))
    assert info.value.reason == "pool_not_local"


def test_signature_check_can_be_left_to_a_separate_step() -> None:
    tx = a_tx()
    check_tx_stateless(SignedTx(tx.body, bytes(64)), CHAIN, 0, 2, verify_signatures=False)


# -- stateful admission


def test_rejects_wrong_nonce() -> None:
    state = genesis_state(_genesis(), 0)
    check_tx_nonce(state, a_tx(nonce=0))
    with pytest.raises(InvalidTx) as info:
        check_tx_nonce(state, a_tx(nonce=1))
    assert info.value.reason == "wrong_nonce"


def _genesis() -> Genesis:
    return get_genesis()
