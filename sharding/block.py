"""Blocks (PROTOCOL.md section 3).

``block_hash = H(TAG_BLOCK_HEADER || encode(header))``. The header commits to the
transactions (``tx_root``: Merkle root over the encoded signed transactions), the
inbound receipts (``inbound_root``: over the encoded receipts, proofs excluded),
the outgoing receipts (``receipts_root``) and the state after the block
(``state_root``). The commit certificate is stored next to the block, not in it.

Inbound receipts carry their evidence (docs/PROTOCOL.md section 5):
``inbound_proofs[i]`` proves ``inbound[i]`` against the ``receipts_root`` of a
certified source header listed in ``source_headers``. ``evidence_root`` in the
header commits to both lists, so the block hash binds the evidence and a body
cannot be padded or swapped after certification. The executors do not look at
the evidence; ``sharding.crossshard.check_block_evidence`` does, on every replica
before it votes and on every node before it applies a synced block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from consensus.kernel.codec import WireStruct, decode, encode
from consensus.kernel.crypto import TAG_BLOCK_HEADER, TAG_EVIDENCE, tagged_hash
from consensus.kernel.limits import BLOCK_BYTES_MAX, CERTIFICATE_BYTES_MAX
from sharding.merkle import InclusionProof, compute_root
from sharding.receipts import Receipt
from sharding.tx import SignedTx

HASH_BYTES = 32

U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack caps ints at 2**64 - 1
Hash32 = Annotated[bytes, msgspec.Meta(min_length=HASH_BYTES, max_length=HASH_BYTES)]

GENESIS_PREV_HASH = bytes(HASH_BYTES)
BLOCK_SOURCES_MAX = 4096


class BlockHeader(WireStruct, frozen=True):
    shard: Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
    height: U64
    view: U64
    prev_hash: Hash32
    time_ms: U64
    proposer: Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]  # validator index
    tx_root: Hash32
    inbound_root: Hash32
    receipts_root: Hash32
    state_root: Hash32
    evidence_root: Hash32  # compute_evidence_root(inbound_proofs, source_headers)


class ReceiptProof(WireStruct, frozen=True):
    """Evidence that an inbound receipt was emitted by a committed source block."""

    source: Annotated[int, msgspec.Meta(ge=0, le=BLOCK_SOURCES_MAX)]  # into source_headers
    inclusion: InclusionProof


class SourceHeader(WireStruct, frozen=True):
    """A source shard's header with its commit certificate (encoded by the consensus layer)."""

    header: BlockHeader
    certificate: Annotated[bytes, msgspec.Meta(max_length=CERTIFICATE_BYTES_MAX)]


class Block(WireStruct, frozen=True):
    header: BlockHeader
    txs: list[SignedTx]
    inbound: list[Receipt]  # by source shard, then seq
    inbound_proofs: list[ReceiptProof] = []  # one per inbound receipt
    source_headers: list[SourceHeader] = []  # each used by at least one proof


def block_hash(block_or_header: Block | BlockHeader) -> bytes:
    header = block_or_header.header if isinstance(block_or_header, Block) else block_or_header
    return tagged_hash(TAG_BLOCK_HEADER, encode(header))


def compute_tx_root(txs: Sequence[SignedTx]) -> bytes:
    return compute_root([encode(tx) for tx in txs])


def compute_inbound_root(inbound: Sequence[Receipt]) -> bytes:
    return compute_root([encode(receipt) for receipt in inbound])


def compute_evidence_root(
    proofs: Sequence[ReceiptProof], sources: Sequence[SourceHeader]
) -> bytes:
    """What the header commits to of the inbound evidence: one hash over both lists."""
    return tagged_hash(TAG_EVIDENCE, encode(list(proofs)), encode(list(sources)))


EMPTY_EVIDENCE_ROOT = compute_evidence_root([], [])


def encode_block(block: Block) -> bytes:
    return encode(block)


def decode_block(data: bytes, max_bytes: int = BLOCK_BYTES_MAX) -> Block:
    """Decode untrusted bytes; raises only ``DecodeError``."""
    return decode(data, Block, max_bytes)
