"""Blocks and receipts: hashing, roots and decoding of untrusted bytes (PROTOCOL.md 1, 3, 5)."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.codec import encode
from consensus.kernel.crypto import TAG_BLOCK_HEADER, TAG_RECEIPT, tagged_hash
from consensus.kernel.errors import DecodeError, OversizedError
from sharding.block import (
    Block,
    block_hash,
    compute_inbound_root,
    compute_tx_root,
    decode_block,
)
from sharding.genesis import genesis_state
from sharding.merkle import EMPTY_ROOT, compute_proof, compute_root, is_valid_proof
from sharding.receipts import compute_receipts_root, receipt_hash
from sharding.tx import Swap, Transfer
from tests.support.ledger import get_genesis, get_keys, get_pool_on, make_tx, propose


def a_block() -> Block:
    state = genesis_state(get_genesis(), 0)
    a = get_keys(0)[0]
    far = get_keys(1)[0]
    txs = [
        make_tx(a, 0, Transfer(far.public_key, 0, 5)),
        make_tx(a, 1, Swap(get_pool_on(1).address, 0, 100, 1)),
    ]
    return propose(state, txs)[0]


def test_block_round_trips_through_bytes() -> None:
    block = a_block()
    assert decode_block(encode(block)) == block


def test_block_hash_is_the_tagged_hash_of_the_header() -> None:
    block = a_block()
    assert block_hash(block) == block_hash(block.header)
    assert block_hash(block) == tagged_hash(TAG_BLOCK_HEADER, encode(block.header))


@pytest.mark.parametrize(
    "field", ["shard", "height", "view", "time_ms", "proposer"]
)
def test_block_hash_commits_to_every_header_field(field: str) -> None:
    header = a_block().header
    changed = msgspec.structs.replace(header, **{field: getattr(header, field) + 1})
    assert block_hash(changed) != block_hash(header)


def test_roots_are_merkle_roots_of_the_encoded_items() -> None:
    block = a_block()
    assert block.header.tx_root == compute_tx_root(block.txs) == compute_root(
        [encode(tx) for tx in block.txs]
    )
    assert block.header.inbound_root == compute_inbound_root([]) == EMPTY_ROOT


def test_outgoing_receipts_are_provable_against_receipts_root() -> None:
    state = genesis_state(get_genesis(), 0)
    a, far = get_keys(0)[0], get_keys(1)[0]
    txs = [make_tx(a, n, Transfer(far.public_key, 0, 5)) for n in range(3)]
    block, result, _ = propose(state, txs)
    leaves = [encode(r) for r in result.receipts]
    assert block.header.receipts_root == compute_receipts_root(result.receipts)
    for i, leaf in enumerate(leaves):
        assert is_valid_proof(leaf, compute_proof(leaves, i), block.header.receipts_root)
    assert receipt_hash(result.receipts[0]) == tagged_hash(TAG_RECEIPT, leaves[0])


def test_decode_block_rejects_oversized_bytes() -> None:
    with pytest.raises(OversizedError):
        decode_block(encode(a_block()), max_bytes=100)


@given(st.binary(max_size=2000))
def test_random_bytes_never_escape_decode_block_as_anything_but_decode_error(
    data: bytes,
) -> None:
    with contextlib.suppress(DecodeError):
        decode_block(data)


@given(st.data())
def test_mutated_block_bytes_never_escape_as_anything_but_decode_error(
    data: st.DataObject,
) -> None:
    raw = bytearray(encode(a_block()))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode_block(bytes(raw))
