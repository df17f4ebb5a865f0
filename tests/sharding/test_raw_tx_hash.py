"""``raw_tx_hash``: a transaction's hash read off its bytes (issue 16, deliverable 2:
a forwarded transaction the mempool holds is refused without being decoded)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.kernel.codec import encode
from sharding.tx import SignedTx, Swap, Transfer, decode_tx, raw_tx_hash, tx_hash
from tests.support.ledger import get_keys, make_tx

KEYS = get_keys(0)


@settings(max_examples=60, deadline=None)
@given(nonce=st.integers(0, 2**64 - 2), amount=st.integers(0, 2**64 - 1),
       asset=st.integers(0, 255), chain=st.text(max_size=40), swap=st.booleans())
def test_the_hash_read_off_the_bytes_is_the_transactions_hash(
        nonce: int, amount: int, asset: int, chain: str, swap: bool) -> None:
    call = (Swap(KEYS[1].public_key, asset, amount, 0) if swap
            else Transfer(KEYS[1].public_key, asset, amount))
    tx = make_tx(KEYS[0], nonce, call, chain_id=chain)
    raw = encode(tx)
    assert raw_tx_hash(raw) == tx_hash(tx) == tx_hash(decode_tx(raw))


@pytest.mark.parametrize("raw", [b"", b"\x92", b"\x93" + bytes(80), b"\x92" + bytes(80),
                                 b"\x92" + bytes(10) + b"\xc4\x41" + bytes(64)])
def test_bytes_not_shaped_as_a_transaction_have_none(raw: bytes) -> None:
    assert raw_tx_hash(raw) is None


def test_another_signature_names_the_same_transaction() -> None:
    """The hash covers the body only, as ``tx_hash`` does: a copy with another
    signature is the same transaction to the mempool (a duplicate)."""
    tx = make_tx(KEYS[0], 0, Transfer(KEYS[1].public_key, 0, 1))
    forged = SignedTx(tx.body, bytes(64))
    assert raw_tx_hash(encode(forged)) == tx_hash(tx)
