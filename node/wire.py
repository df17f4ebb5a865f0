"""Node-to-node payloads that are not PBFT messages: channels, tx batches, and the
requests a node answers (block sync, receipts with proofs, receipt status)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from consensus.kernel.codec import WireStruct, decode, encode

CHANNEL_CONSENSUS = 1
CHANNEL_TXS = 2
CHANNEL_RECEIPTS = 3  # receipt bundles pushed by a source shard's relayers
CHANNEL_ANNOUNCE = 4  # block announcements, from a block's proposer to other shards' nodes

TOPIC_BLOCKS = "shardnet/blocks/1"  # subscribed and validated; nothing published on it

TX_BATCH_TXS_MAX = 4096
STATUS_SEQS_MAX = 64

Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Shard = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]


class TxBatch(WireStruct, frozen=True):
    """Transactions a node admitted, forwarded to the other replicas of its shard."""

    txs: list[bytes]


class SyncRequest(WireStruct, frozen=True, tag=1):
    shard: Shard
    first: Seq
    last: Seq


class ReceiptsRequest(WireStruct, frozen=True, tag=2):
    """The receipts of channel (answering shard -> ``dst_shard``) in a sequence range,
    as bundles with proofs (the relay's pull path: gaps, lost bundles, sync)."""

    dst_shard: Shard
    first_seq: Seq
    last_seq: Seq


class ReceiptStatusRequest(WireStruct, frozen=True, tag=3):
    """Has the answering shard applied these receipts of ``src_shard`` (caused by
    ``origin``), where, and what did applying them emit?"""

    origin: bytes
    src_shard: Shard
    seqs: Annotated[list[Seq], msgspec.Meta(max_length=STATUS_SEQS_MAX)]


Request = SyncRequest | ReceiptsRequest | ReceiptStatusRequest


class ReceiptsResponse(WireStruct, frozen=True):
    bundles: list[bytes]  # each an encoded ReceiptBundle, verified on its own
    out_seq: int  # the answering shard's last seq on the channel (a hint: not certified)


class ReceiptRef(WireStruct, frozen=True):
    dst_shard: int
    seq: int


class ReceiptStatus(WireStruct, frozen=True):
    seq: int
    applied: bool
    height: int  # 0 when not applied
    time_ms: int  # the applying block's header time
    emitted: list[ReceiptRef]  # receipts that applying it caused (a swap's output or refund)


class ReceiptStatusResponse(WireStruct, frozen=True):
    shard: int
    items: list[ReceiptStatus]


class SyncedBlockWire(WireStruct, frozen=True):
    height: int
    block_hash: bytes
    payload: bytes
    certificate: bytes


class SyncResponse(WireStruct, frozen=True):
    blocks: list[SyncedBlockWire]


class BlockAnnouncement(WireStruct, frozen=True):
    """Sent by a block's proposer to every node of the other shards after a commit
    (``CHANNEL_ANNOUNCE``): enough to know a shard's tip and fetch its receipts; the
    body travels over streams (block sync). ``out_seqs[d]``: the last receipt sequence
    of channel (shard -> d) the sender had committed, a hint that tells the relay of
    shard d whether a pull is owed (not covered by the certificate; empty: no hint)."""

    shard: int
    height: int
    block_hash: bytes
    header: bytes
    certificate: bytes
    out_seqs: tuple[Seq, ...] = ()


def encode_tx_batch(raw_txs: list[bytes]) -> bytes:
    return encode(TxBatch(raw_txs))


def decode_tx_batch(data: bytes, max_bytes: int) -> TxBatch:
    batch = decode(data, TxBatch, max_bytes)
    if len(batch.txs) > TX_BATCH_TXS_MAX:
        from consensus.kernel.errors import OversizedError

        raise OversizedError(f"{len(batch.txs)} txs in one batch")
    return batch
