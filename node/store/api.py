"""``StoreAPI``: the storage interface the node depends on.

``Store`` (SQLite, node/store/sqlite.py) and ``MemoryStore`` (in memory, for tests
and the whole-network simulator) implement it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from node.store.records import (
    AccountTxRecord,
    BlockCommit,
    InboundRecord,
    ReceiptRecord,
    Snapshot,
    StoredBlock,
    TxRecord,
)


class StoreAPI(Protocol):
    @property
    def latest_height(self) -> int | None: ...

    async def close(self) -> None: ...

    async def initialize(
        self, genesis_hash: bytes, state_items: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        """Write the genesis state once; True if written now, False if already there."""
        ...

    async def commit_block(self, commit: BlockCommit) -> None: ...

    async def put_metadata(self, items: Mapping[str, bytes]) -> None: ...

    async def get_metadata(self, key: str) -> bytes | None: ...

    async def get_all_metadata(self) -> dict[str, bytes]: ...

    async def latest_block(self) -> StoredBlock | None: ...

    async def get_block(self, height: int) -> StoredBlock | None: ...

    async def get_block_by_hash(self, block_hash: bytes) -> StoredBlock | None: ...

    async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
        """Blocks ``first..last`` inclusive, with certificates; bounded, maybe fewer."""
        ...

    async def get_tx(self, tx_hash: bytes) -> TxRecord | None: ...

    async def get_receipts(
        self, dst_shard: int, first_seq: int, last_seq: int
    ) -> list[ReceiptRecord]:
        """Receipts for ``dst_shard`` with ``first_seq <= seq <= last_seq``; bounded."""
        ...

    async def get_block_receipts(self, height: int) -> list[ReceiptRecord]: ...

    async def get_receipts_by_origin(self, origin: bytes) -> list[ReceiptRecord]: ...

    async def get_inbound_by_origin(self, origin: bytes) -> list[InboundRecord]: ...

    async def get_account_txs(self, address: bytes, before: int, limit: int
                              ) -> list[AccountTxRecord]:
        """``address``'s history entries with cursor < ``before``, newest first, at
        most ``min(limit, ACCOUNT_TXS_PAGE_MAX)`` (node/store/accounts.py)."""
        ...

    async def get_state(self, key: bytes) -> bytes | None: ...

    async def state_page(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]: ...

    async def load_snapshot(self) -> Snapshot: ...
