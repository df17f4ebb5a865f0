"""``Store``: the node's SQLite store, one file per node, one writer, WAL journal.

``commit_block`` writes everything a committed block changes in ONE SQL
transaction (ARCHITECTURE.md, PROTOCOL.md section 4): after ``kill -9`` at any
moment a reopened store holds a prefix of the committed chain whose last block,
state items and metadata belong together, so the node restarts at that block and
syncs the rest from its peers. Durability choice (``synchronous=FULL`` by
default) and measurements: docs/STORAGE.md.

This class composes the parts: the connection and file lock (``db``), the schema
(``schema``), one module per table (``blocks``, ``receipts``, ``state``, ``meta``)
and the checks it shares with ``MemoryStore`` (``checks``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import aiosqlite

from node.store import accounts, blocks, meta, receipts, schema, state
from node.store.checks import (
    StoreLimits,
    check_commit,
    check_genesis,
    check_limit,
    check_metadata,
)
from node.store.db import Body, Db, lock_file, unlock_file
from node.store.errors import NotInitialized, StoreClosed, StoreError
from node.store.records import (
    META_GENESIS_HASH,
    AccountTxRecord,
    BlockCommit,
    InboundRecord,
    ReceiptRecord,
    Snapshot,
    StateWrite,
    StoredBlock,
    TxRecord,
)

Synchronous = Literal["NORMAL", "FULL"]
READER_BUSY_TIMEOUT_MS = 5_000  # the read connection waits this long on a locked file


class Store:
    """The SQLite store. Open with ``await Store.open(path)``; one writer per file."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        limits: StoreLimits,
        synchronous: Synchronous,
        lock_fd: int,
    ) -> None:
        self._db = Db(db, limits.sql_batch_rows)
        # The read connection (``_setup`` opens it): what peers and clients fetch
        # (blocks for sync, txs, receipts) is read there, without ``_lock``, so a
        # large or slow read never holds up a commit (WAL: readers and the writer do
        # not wait for each other; each read sees the last commit before it began).
        self._reader: Db | None = None
        self._lock_fd: int | None = lock_fd
        self.path = path
        self.limits = limits
        self.synchronous = synchronous
        # One connection; the lock keeps reads out of a commit's open transaction.
        self._lock = asyncio.Lock()
        self._latest_height: int | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        limits: StoreLimits | None = None,
    ) -> Store:
        if synchronous not in ("NORMAL", "FULL"):
            raise StoreError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = lock_file(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            unlock_file(lock_fd)
            raise StoreError(f"cannot open {path}: {exc}") from exc
        store = cls(db, path, limits or StoreLimits(), synchronous, lock_fd)
        try:
            await store._setup()
        except BaseException:
            await store.close()
            raise
        return store

    async def _setup(self) -> None:
        db = self._db
        try:
            mode = await db.one("PRAGMA journal_mode=WAL")
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.path}: cannot enable WAL (journal_mode={mode})")
            await db.execute(f"PRAGMA synchronous={self.synchronous}")
            await db.execute("PRAGMA foreign_keys=OFF")
            await schema.prepare(db, self.path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self._latest_height = await blocks.latest_height(db)
        try:
            reader = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path} for reading: {exc}") from exc
        self._reader = Db(reader, self.limits.sql_batch_rows)
        try:
            await self._reader.execute("PRAGMA query_only=1")
            await self._reader.execute(f"PRAGMA busy_timeout={READER_BUSY_TIMEOUT_MS}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    @property
    def reader(self) -> Db:
        """The read connection (closed with the store)."""
        if self._reader is None:
            raise StoreClosed("store is not open")
        return self._reader

    async def close(self) -> None:
        if self._db.closed:
            return
        async with self._lock:
            try:
                if self._reader is not None:
                    await self._reader.close()
                await self._db.close()
            finally:
                if self._lock_fd is not None:
                    unlock_file(self._lock_fd)
                    self._lock_fd = None

    @property
    def latest_height(self) -> int | None:
        return self._latest_height

    # -- writes ------------------------------------------------------------------

    async def initialize(
        self, genesis_hash: bytes, state_items: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        async with self._lock:
            stored = await meta.get_metadata(self._db, META_GENESIS_HASH)
            if check_genesis(stored, genesis_hash):
                return False
            check_limit("genesis state items", len(state_items), self.limits.state_writes_max)
            writes: list[StateWrite] = list(state_items)
            await self._transaction(writes, {META_GENESIS_HASH: genesis_hash})
            return True

    async def commit_block(self, commit: BlockCommit) -> None:
        async with self._lock:
            db = self._db
            if await meta.get_metadata(db, META_GENESIS_HASH) is None:
                raise NotInitialized("commit_block before initialize()")
            check_commit(commit, self._latest_height, self.limits)
            accounts.check_account_txs(commit, self.limits)

            async def rows() -> None:
                await blocks.insert_block(db, commit)
                await receipts.insert_receipts(db, commit)
                await receipts.insert_inbound(db, commit)
                await blocks.insert_txs(db, commit)
                await accounts.insert_account_txs(db, commit)

            await self._transaction(commit.state_writes, commit.metadata, rows)
            self._latest_height = commit.height

    async def put_metadata(self, items: Mapping[str, bytes]) -> None:
        """Persist consensus metadata alone (a view change, a vote) before acting on it."""
        check_metadata(items, self.limits)
        async with self._lock:
            await self._transaction((), items)

    async def _transaction(
        self,
        state_writes: Sequence[StateWrite],
        metadata: Mapping[str, bytes],
        rows: Body | None = None,
    ) -> None:
        """``rows``, then the state and metadata writes, in one SQL transaction."""
        db = self._db

        async def body() -> None:
            if rows is not None:
                await rows()
            await state.write_state(db, state_writes)
            await meta.write_metadata(db, metadata)

        await db.transaction(body)

    # -- reads -------------------------------------------------------------------

    # Metadata, state and start-up reads: under ``_lock`` on the writer's connection
    # (one consistent view with the commit before them).

    async def get_metadata(self, key: str) -> bytes | None:
        async with self._lock:
            return await meta.get_metadata(self._db, key)

    async def get_all_metadata(self) -> dict[str, bytes]:
        async with self._lock:
            return await meta.all_metadata(self._db)

    async def latest_block(self) -> StoredBlock | None:
        async with self._lock:
            return await blocks.latest_block(self._db)

    # Committed blocks, txs and receipts: on the read connection, never under ``_lock``.

    async def get_block(self, height: int) -> StoredBlock | None:
        return await blocks.block_at(self.reader, height)

    async def get_block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        return await blocks.block_by_hash(self.reader, block_hash)

    async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
        return await blocks.blocks_between(self.reader, first, last, self.limits)

    async def get_tx(self, tx_hash: bytes) -> TxRecord | None:
        return await blocks.tx(self.reader, tx_hash)

    async def get_receipts(
        self, dst_shard: int, first_seq: int, last_seq: int
    ) -> list[ReceiptRecord]:
        return await receipts.receipts_between(
            self.reader, dst_shard, first_seq, last_seq, self.limits.range_receipts_max
        )

    async def get_block_receipts(self, height: int) -> list[ReceiptRecord]:
        """Every outgoing receipt of the block at ``height`` (all destinations)."""
        return await receipts.block_receipts(self.reader, height)

    async def get_receipts_by_origin(self, origin: bytes) -> list[ReceiptRecord]:
        return await receipts.receipts_by_origin(self.reader, origin)

    async def get_inbound_by_origin(self, origin: bytes) -> list[InboundRecord]:
        return await receipts.inbound_by_origin(self.reader, origin)

    async def get_account_txs(self, address: bytes, before: int, limit: int
                              ) -> list[AccountTxRecord]:
        """``address``'s entries with cursor < ``before``, newest first (accounts.py)."""
        return await accounts.account_page(self.reader, address, before, limit)

    async def get_state(self, key: bytes) -> bytes | None:
        async with self._lock:
            return await state.get_state(self._db, key)

    async def state_page(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """State items with key > ``after`` in key order (start with ``b""``)."""
        async with self._lock:
            return await state.state_page(self._db, after, limit, self.limits)

    async def load_snapshot(self) -> Snapshot:
        """Latest block, all state items and metadata as of one instant (for start-up)."""
        async with self._lock:
            items = await state.all_state(self._db, self.limits)
            return Snapshot(
                await blocks.latest_block(self._db), items, await meta.all_metadata(self._db)
            )

    async def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` ("ok" when the file is sound)."""
        async with self._lock:
            row = await self._db.one("PRAGMA integrity_check")
        return "" if row is None else str(row[0])

