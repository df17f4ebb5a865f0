"""``StoreAPI`` in memory, for tests of the node and the whole-network simulator
(STYLE.md: every interface the node depends on has an in-memory implementation).
Same checks as ``Store`` (node/store/checks.py), same atomicity, no file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from node.store import accounts
from node.store.checks import (
    ORIGIN_RECORDS_MAX,
    BlockRange,
    StoreLimits,
    check_commit,
    check_genesis,
    check_limit,
    check_metadata,
    page_items,
    range_last,
)
from node.store.errors import DuplicateEntry, NotInitialized, StoreClosed
from node.store.records import (
    META_GENESIS_HASH,
    AccountTxRecord,
    BlockCommit,
    InboundRecord,
    ReceiptRecord,
    Snapshot,
    StoredBlock,
    TxRecord,
    final_writes,
)


class MemoryStore:
    """``StoreAPI`` in memory, same checks and atomicity (validate, then apply), no file."""

    def __init__(self, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self.blocks: dict[int, StoredBlock] = {}
        self.heights_by_hash: dict[bytes, int] = {}
        self.state: dict[bytes, bytes] = {}
        self.receipts: dict[tuple[int, int], ReceiptRecord] = {}
        self.inbound: dict[tuple[int, int], InboundRecord] = {}
        self.txs: dict[bytes, TxRecord] = {}
        self.account_txs: list[AccountTxRecord] = []
        self.metadata: dict[str, bytes] = {}
        self.closed = False

    def _open(self) -> None:
        if self.closed:
            raise StoreClosed("store is closed")

    @property
    def latest_height(self) -> int | None:
        return max(self.blocks) if self.blocks else None

    async def close(self) -> None:
        self.closed = True

    async def initialize(
        self, genesis_hash: bytes, state_items: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        self._open()
        if check_genesis(self.metadata.get(META_GENESIS_HASH), genesis_hash):
            return False
        check_limit("genesis state items", len(state_items), self.limits.state_writes_max)
        self.state.update(state_items)
        self.metadata[META_GENESIS_HASH] = genesis_hash
        return True

    async def commit_block(self, commit: BlockCommit) -> None:
        self._open()
        if META_GENESIS_HASH not in self.metadata:
            raise NotInitialized("commit_block before initialize()")
        check_commit(commit, self.latest_height, self.limits)
        accounts.check_account_txs(commit, self.limits)
        # Validate every uniqueness constraint before touching anything.
        if commit.block_hash in self.heights_by_hash:
            raise DuplicateEntry(f"block hash {commit.block_hash.hex()[:16]}")
        receipt_keys = [(r.dst_shard, r.seq) for r in commit.receipts]
        if len(set(receipt_keys)) != len(receipt_keys) or any(
            k in self.receipts for k in receipt_keys
        ):
            raise DuplicateEntry("receipt (dst_shard, seq)")
        tx_hashes = [t.tx_hash for t in commit.txs]
        if len(set(tx_hashes)) != len(tx_hashes) or any(h in self.txs for h in tx_hashes):
            raise DuplicateEntry("tx hash")
        self.blocks[commit.height] = StoredBlock(
            commit.height, commit.block_hash, commit.block, commit.certificate
        )
        self.heights_by_hash[commit.block_hash] = commit.height
        for key, value in final_writes(commit.state_writes).items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        for r in commit.receipts:
            self.receipts[(r.dst_shard, r.seq)] = ReceiptRecord(
                r.dst_shard, r.seq, r.receipt, commit.height, r.origin
            )
        for i in commit.inbound:
            self.inbound[(i.src_shard, i.seq)] = InboundRecord(
                i.src_shard, i.seq, i.origin, commit.height
            )
        for t in commit.txs:
            self.txs[t.tx_hash] = t
        self.account_txs.extend(commit.account_txs)
        self.metadata.update(commit.metadata)

    async def put_metadata(self, items: Mapping[str, bytes]) -> None:
        self._open()
        check_metadata(items, self.limits)
        self.metadata.update(items)

    async def get_metadata(self, key: str) -> bytes | None:
        self._open()
        return self.metadata.get(key)

    async def get_all_metadata(self) -> dict[str, bytes]:
        self._open()
        return dict(sorted(self.metadata.items()))

    async def latest_block(self) -> StoredBlock | None:
        self._open()
        height = self.latest_height
        return None if height is None else self.blocks[height]

    async def get_block(self, height: int) -> StoredBlock | None:
        self._open()
        return self.blocks.get(height)

    async def get_block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        self._open()
        height = self.heights_by_hash.get(block_hash)
        return None if height is None else self.blocks[height]

    async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
        self._open()
        answer = BlockRange(self.limits)
        for height in range(first, range_last(first, last, self.limits) + 1):
            block = self.blocks.get(height)
            if block is None:
                if answer.blocks:
                    break
                continue
            if not answer.add(block):
                break
        return answer.blocks

    async def get_tx(self, tx_hash: bytes) -> TxRecord | None:
        self._open()
        return self.txs.get(tx_hash)

    async def get_receipts(
        self, dst_shard: int, first_seq: int, last_seq: int
    ) -> list[ReceiptRecord]:
        self._open()
        found = sorted(
            (
                r
                for (dst, seq), r in self.receipts.items()
                if dst == dst_shard and first_seq <= seq <= last_seq
            ),
            key=lambda r: r.seq,
        )
        return found[: self.limits.range_receipts_max]

    async def get_block_receipts(self, height: int) -> list[ReceiptRecord]:
        self._open()
        return sorted((r for r in self.receipts.values() if r.height == height),
                      key=lambda r: (r.dst_shard, r.seq))

    async def get_receipts_by_origin(self, origin: bytes) -> list[ReceiptRecord]:
        self._open()
        return sorted((r for r in self.receipts.values() if r.origin == origin),
                      key=lambda r: (r.dst_shard, r.seq))[:ORIGIN_RECORDS_MAX]

    async def get_inbound_by_origin(self, origin: bytes) -> list[InboundRecord]:
        self._open()
        return sorted((r for r in self.inbound.values() if r.origin == origin),
                      key=lambda r: (r.src_shard, r.seq))[:ORIGIN_RECORDS_MAX]

    async def get_account_txs(self, address: bytes, before: int, limit: int
                              ) -> list[AccountTxRecord]:
        self._open()
        return accounts.memory_page(self.account_txs, address, before, limit)

    async def get_state(self, key: bytes) -> bytes | None:
        self._open()
        return self.state.get(key)

    async def state_page(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        self._open()
        return sorted((k, v) for k, v in self.state.items() if k > after)[
            : page_items(limit, self.limits)
        ]

    async def load_snapshot(self) -> Snapshot:
        self._open()
        return Snapshot(
            await self.latest_block(),
            sorted(self.state.items()),
            dict(sorted(self.metadata.items())),
        )
