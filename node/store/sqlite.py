"""``Store``: the node's SQLite store, one file per node, one writer, WAL journal.

``commit_block`` writes everything a committed block changes in ONE SQL
transaction (ARCHITECTURE.md, PROTOCOL.md section 4): after ``kill -9`` at any
moment a reopened store holds a prefix of the committed chain whose last block,
state items and metadata belong together, so the node restarts at that block and
syncs the rest from its peers. Every write (``commit_block``, ``put_metadata``,
``initialize``) is one synchronous function run on the connection's thread in one
hop (``Db.run``): its checks, the transaction and every statement in it. Durability
choice (``synchronous=FULL`` by default) and measurements: docs/STORAGE.md.

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
from node.store.db import Db, lock_file, transaction, unlock_file
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
        self._db = Db(db)
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
        self._reader = Db(reader)
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
        limits = self.limits
        writes: list[StateWrite] = list(state_items)

        def work(conn: sqlite3.Connection) -> bool:
            if check_genesis(meta.metadata(conn, META_GENESIS_HASH), genesis_hash):
                return False
            check_limit("genesis state items", len(writes), limits.state_writes_max)
            transaction(conn, lambda c: _write_state_and_metadata(
                c, writes, {META_GENESIS_HASH: genesis_hash}))
            return True

        async with self._lock:
            return await self._db.run(work)

    async def commit_block(self, commit: BlockCommit) -> None:
        async with self._lock:
            latest, limits = self._latest_height, self.limits
            committed = False

            def work(conn: sqlite3.Connection) -> None:
                nonlocal committed
                if meta.metadata(conn, META_GENESIS_HASH) is None:
                    raise NotInitialized("commit_block before initialize()")
                check_commit(commit, latest, limits)
                accounts.check_account_txs(commit, limits)
                transaction(conn, lambda c: _write_block(c, commit))
                committed = True

            try:
                await self._db.run(work)
            finally:
                # ``run`` ends only after ``work`` has, cancelled or not: when the
                # transaction committed, memory follows the file, even if this task
                # was cancelled meanwhile (it still raises ``CancelledError``).
                if committed:
                    self._latest_height = commit.height

    async def put_metadata(self, items: Mapping[str, bytes]) -> None:
        """Persist consensus metadata alone (a view change, a vote) before acting on it."""
        check_metadata(items, self.limits)
        async with self._lock:
            await self._db.run(
                lambda conn: transaction(conn, lambda c: meta.write_metadata(c, items)))

    # -- reads -------------------------------------------------------------------

    # Metadata, state and start-up reads: under ``_lock`` on the writer's connection
    # (one consistent view with the commit before them).

    async def get_metadata(self, key: str) -> bytes | None:
        async with self._lock:
            return await self._db.run(lambda conn: meta.metadata(conn, key))

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


# The writes, synchronous: they run on the connection's thread, inside ``transaction``.


def _write_block(conn: sqlite3.Connection, commit: BlockCommit) -> None:
    blocks.insert_block(conn, commit)
    receipts.insert_receipts(conn, commit)
    receipts.insert_inbound(conn, commit)
    blocks.insert_txs(conn, commit)
    accounts.insert_account_txs(conn, commit)
    _write_state_and_metadata(conn, commit.state_writes, commit.metadata)


def _write_state_and_metadata(
    conn: sqlite3.Connection, writes: Sequence[StateWrite], metadata: Mapping[str, bytes]
) -> None:
    state.write_state(conn, writes)
    meta.write_metadata(conn, metadata)
