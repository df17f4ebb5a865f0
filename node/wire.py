"""Node-to-node payloads that are not PBFT messages: channels, tx batches, block sync."""

from __future__ import annotations

from consensus.codec import WireStruct, decode, encode

CHANNEL_CONSENSUS = 1
CHANNEL_TXS = 2

TOPIC_BLOCKS = "shardnet/blocks/1"

TX_BATCH_TXS_MAX = 4096
SYNC_REQUEST_BYTES_MAX = 64


class TxBatch(WireStruct, frozen=True):
    """Transactions a node admitted, forwarded to the other replicas of its shard."""

    txs: list[bytes]


class SyncRequest(WireStruct, frozen=True):
    shard: int
    first: int
    last: int


class SyncedBlockWire(WireStruct, frozen=True):
    height: int
    block_hash: bytes
    payload: bytes
    certificate: bytes


class SyncResponse(WireStruct, frozen=True):
    blocks: list[SyncedBlockWire]


class BlockAnnouncement(WireStruct, frozen=True):
    """Gossiped to every node after a commit: enough to know a shard's tip and fetch
    its receipts; the body travels over streams (block sync)."""

    shard: int
    height: int
    block_hash: bytes
    header: bytes
    certificate: bytes


def encode_tx_batch(raw_txs: list[bytes]) -> bytes:
    return encode(TxBatch(raw_txs))


def decode_tx_batch(data: bytes, max_bytes: int) -> TxBatch:
    batch = decode(data, TxBatch, max_bytes)
    if len(batch.txs) > TX_BATCH_TXS_MAX:
        from consensus.errors import OversizedError

        raise OversizedError(f"{len(batch.txs)} txs in one batch")
    return batch
