"""What the store reads and writes: encoded bytes, indexed by what the node looks
them up by (height, hash, destination shard and sequence, tx hash, origin).

Plain frozen records, no I/O: both backends build and return these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

META_GENESIS_HASH = "genesis_hash"

# A state write: (key, value), value None deletes the key; in order, the last one wins.
StateWrite = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class TxRecord:
    """Where a committed transaction is and how it ended (``outcome`` is encoded)."""

    tx_hash: bytes
    height: int
    position: int
    outcome: bytes


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """An outgoing cross-shard receipt, encoded, indexed by its channel sequence."""

    dst_shard: int
    seq: int
    receipt: bytes
    height: int = 0  # filled by the store on commit; ignored on input
    origin: bytes = b""  # hash of the transaction that caused it


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """An inbound cross-shard receipt this shard applied, and where."""

    src_shard: int
    seq: int
    origin: bytes
    height: int = 0  # filled by the store on commit; ignored on input


@dataclass(frozen=True, slots=True)
class AccountTxRecord:
    """One line of an account's history (node/store/accounts.py): the account took
    part in transaction ``tx_hash`` at ``height`` as ``role`` ("sender", "recipient",
    or "credit": a cross-shard receipt of that transaction applied here). ``ordinal``
    orders the entries of one block (inbound receipts first, then the transactions)."""

    address: bytes
    height: int
    ordinal: int
    tx_hash: bytes
    role: str


@dataclass(frozen=True, slots=True)
class StoredBlock:
    height: int
    block_hash: bytes
    block: bytes
    certificate: bytes


@dataclass(frozen=True, slots=True)
class BlockCommit:
    """Everything one committed block changes, written atomically by ``commit_block``."""

    height: int
    block_hash: bytes
    block: bytes
    certificate: bytes
    state_writes: Sequence[StateWrite] = ()
    receipts: Sequence[ReceiptRecord] = ()
    txs: Sequence[TxRecord] = ()
    inbound: Sequence[InboundRecord] = ()
    account_txs: Sequence[AccountTxRecord] = ()
    metadata: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view for start-up: the last block, every state item, the metadata."""

    latest: StoredBlock | None
    state_items: list[tuple[bytes, bytes]]
    metadata: dict[str, bytes]


def final_writes(writes: Sequence[StateWrite]) -> dict[bytes, bytes | None]:
    """The effect of ``writes`` applied in order: the last write of each key."""
    return dict(writes)
