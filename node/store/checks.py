"""What both backends check before they write, and how they bound what they return.

Every size is bounded by ``StoreLimits`` and checked here, once, before anything
is written: over a bound is ``LimitExceeded`` and the store is unchanged.
``Store`` and ``MemoryStore`` call the same functions, so they refuse the same
commits and cut the same ranges (tests/node/test_store_equivalence.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from node.store.errors import GenesisMismatch, LimitExceeded, OutOfOrderCommit, StoreError
from node.store.records import BlockCommit, StoredBlock

ORIGIN_RECORDS_MAX = 64  # receipts one transaction can cause, by origin, in one answer


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds on what one call may write or return."""

    block_bytes_max: int = 32 * 1024 * 1024
    certificate_bytes_max: int = 1024 * 1024
    state_writes_max: int = 1_000_000
    receipts_max: int = 100_000
    txs_max: int = 100_000
    metadata_items_max: int = 64
    metadata_bytes_max: int = 48 * 1024 * 1024  # may carry a prepared block payload
    range_blocks_max: int = 256
    range_bytes_max: int = 64 * 1024 * 1024
    range_receipts_max: int = 10_000
    state_page_items: int = 50_000


def check_genesis(stored: bytes | None, genesis_hash: bytes) -> bool:
    """True if the store already holds ``genesis_hash``, False if it holds none;
    another genesis is refused."""
    if stored is None:
        return False
    if stored != genesis_hash:
        raise GenesisMismatch(
            f"store holds genesis {stored.hex()[:16]}, given {genesis_hash.hex()[:16]}"
        )
    return True


def check_commit(commit: BlockCommit, latest: int | None, limits: StoreLimits) -> None:
    if latest is not None and commit.height != latest + 1:
        raise OutOfOrderCommit(f"block {commit.height} does not follow stored height {latest}")
    if commit.height < 0:
        raise OutOfOrderCommit(f"negative height {commit.height}")
    check_limit("block bytes", len(commit.block), limits.block_bytes_max)
    check_limit("certificate bytes", len(commit.certificate), limits.certificate_bytes_max)
    check_limit("state writes", len(commit.state_writes), limits.state_writes_max)
    check_limit("receipts", len(commit.receipts), limits.receipts_max)
    check_limit("inbound receipts", len(commit.inbound), limits.receipts_max)
    check_limit("txs", len(commit.txs), limits.txs_max)
    check_metadata(commit.metadata, limits)
    for tx in commit.txs:
        if tx.height != commit.height:
            raise StoreError(f"tx record height {tx.height} != block height {commit.height}")


def check_metadata(items: Mapping[str, bytes], limits: StoreLimits) -> None:
    check_limit("metadata items", len(items), limits.metadata_items_max)
    size = sum(len(k) + len(v) for k, v in items.items())
    check_limit("metadata bytes", size, limits.metadata_bytes_max)


def check_limit(what: str, value: int, limit: int) -> None:
    if value > limit:
        raise LimitExceeded(f"{what}: {value} > limit {limit}")


def range_last(first: int, last: int, limits: StoreLimits) -> int:
    """The last height a block range starting at ``first`` may reach."""
    return min(last, first + limits.range_blocks_max - 1)


def page_items(limit: int, limits: StoreLimits) -> int:
    """The number of state items one page returns (at least one)."""
    return max(1, min(limit, limits.state_page_items))


class BlockRange:
    """The blocks of one range answer, in height order: at most ``range_bytes_max``
    of blocks and certificates, but always the first block."""

    def __init__(self, limits: StoreLimits) -> None:
        self.blocks: list[StoredBlock] = []
        self._size = 0
        self._bytes_max = limits.range_bytes_max

    def add(self, block: StoredBlock) -> bool:
        """Take ``block``; False, without taking it, once the answer is full."""
        self._size += len(block.block) + len(block.certificate)
        if self.blocks and self._size > self._bytes_max:
            return False
        self.blocks.append(block)
        return True
