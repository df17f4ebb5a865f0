"""Node storage: committed blocks, their certificates, state, receipts and metadata.

SQLite through aiosqlite, WAL journal. ``commit_block`` writes everything a
committed block changes in ONE SQL transaction (ARCHITECTURE.md, PROTOCOL.md
section 4): after ``kill -9`` at any moment a reopened store holds a prefix of
the committed chain whose last block, state items and metadata belong together,
so the node restarts at that block and syncs the rest from its peers.

The store speaks bytes: blocks, certificates, receipts, outcomes and state values
arrive encoded, so it does not depend on ledger types, only on what the node
indexes them by (height, hash, destination shard and sequence, tx hash).

``StoreAPI`` is what the node depends on; ``Store`` is the SQLite implementation
and ``node.store_memory.MemoryStore`` the in-memory one for tests of the node. Durability choice
(``synchronous=FULL`` by default) and measurements: docs/STORAGE.md.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import aiosqlite

from consensus.kernel.errors import ShardnetError

ORIGIN_RECORDS_MAX = 64  # receipts one transaction can cause, by origin, in one answer
SCHEMA_VERSION = 2  # 2: receipts by height and origin, inbound receipts applied

Synchronous = Literal["NORMAL", "FULL"]

# A state write: (key, value), value None deletes the key; in order, the last one wins.
StateWrite = tuple[bytes, bytes | None]

META_GENESIS_HASH = "genesis_hash"


# --- errors -------------------------------------------------------------------------


class StoreError(ShardnetError):
    reason = "store"


class StoreClosed(StoreError):
    reason = "store_closed"


class SchemaMismatch(StoreError):
    """The file was written by another schema version (or is not a shardnet store)."""

    reason = "schema_mismatch"


class GenesisMismatch(StoreError):
    """The store was initialised from another genesis than the one given."""

    reason = "genesis_mismatch"


class StoreLocked(StoreError):
    """Another process (or another ``Store`` here) has the file open."""

    reason = "store_locked"


class NotInitialized(StoreError):
    reason = "not_initialized"


class OutOfOrderCommit(StoreError):
    """A block that does not extend the stored chain by exactly one height."""

    reason = "out_of_order"


class DuplicateEntry(StoreError):
    """A block hash, tx hash or (dst shard, seq) receipt that is already stored."""

    reason = "duplicate"


class LimitExceeded(StoreError):
    reason = "limit_exceeded"


# --- records ------------------------------------------------------------------------


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
    metadata: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view for start-up: the last block, every state item, the metadata."""

    latest: StoredBlock | None
    state_items: list[tuple[bytes, bytes]]
    metadata: dict[str, bytes]


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
    sql_batch_rows: int = 10_000


# --- the interface ------------------------------------------------------------------


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

    async def get_state(self, key: bytes) -> bytes | None: ...

    async def state_page(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]: ...

    async def load_snapshot(self) -> Snapshot: ...


# --- validation shared by both implementations -------------------------------------


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


def _chunks(rows: Sequence[tuple[object, ...]], size: int) -> list[Sequence[tuple[object, ...]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# --- SQLite -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    block BLOB NOT NULL,
    certificate BLOB NOT NULL
);
CREATE TABLE state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE receipts (
    dst_shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    height INTEGER NOT NULL,
    receipt BLOB NOT NULL,
    origin BLOB NOT NULL,
    PRIMARY KEY (dst_shard, seq)
) WITHOUT ROWID;
CREATE INDEX receipts_by_height ON receipts (height);
CREATE INDEX receipts_by_origin ON receipts (origin);
CREATE TABLE inbound (
    src_shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    origin BLOB NOT NULL,
    height INTEGER NOT NULL,
    PRIMARY KEY (src_shard, seq)
) WITHOUT ROWID;
CREATE INDEX inbound_by_origin ON inbound (origin);
CREATE TABLE txs (
    hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    position INTEGER NOT NULL,
    outcome BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""


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
        self._db: aiosqlite.Connection | None = db
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
        lock_fd = _lock_file(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            os.close(lock_fd)
            raise StoreError(f"cannot open {path}: {exc}") from exc
        store = cls(db, path, limits or StoreLimits(), synchronous, lock_fd)
        try:
            await store._setup()
        except BaseException:
            await store.close()
            raise
        return store

    async def _setup(self) -> None:
        db = self._conn()
        try:
            mode = await self._fetchone("PRAGMA journal_mode=WAL")
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.path}: cannot enable WAL (journal_mode={mode})")
            await db.execute(f"PRAGMA synchronous={self.synchronous}")
            await db.execute("PRAGMA foreign_keys=OFF")
            tables = await self._fetchall(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
            )
            if not tables:
                others = await self._fetchall("SELECT name FROM sqlite_master")
                if others:
                    raise SchemaMismatch(f"{self.path}: not a shardnet store")
                await db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA.strip().split(";"):
                        if statement.strip():
                            await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                    )
                    await db.execute("COMMIT")
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
            rows = await self._fetchall("SELECT version FROM schema_version")
            if [r[0] for r in rows] != [SCHEMA_VERSION]:
                raise SchemaMismatch(
                    f"{self.path}: schema version {[r[0] for r in rows]}, "
                    f"this build reads {SCHEMA_VERSION}"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        row = await self._fetchone("SELECT MAX(height) FROM blocks")
        self._latest_height = None if row is None or row[0] is None else int(row[0])

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreClosed("store is closed")
        return self._db

    async def _fetchone(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        async with self._conn().execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def _fetchall(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        async with self._conn().execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def close(self) -> None:
        if self._db is None:
            return
        async with self._lock:
            db, self._db = self._db, None
            try:
                await db.close()
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    @property
    def latest_height(self) -> int | None:
        return self._latest_height

    # -- writes ------------------------------------------------------------------

    async def initialize(
        self, genesis_hash: bytes, state_items: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        async with self._lock:
            stored = await self._fetchone(
                "SELECT value FROM meta WHERE key = ?", (META_GENESIS_HASH,)
            )
            if stored is not None:
                if bytes(stored[0]) != genesis_hash:
                    raise GenesisMismatch(
                        f"store holds genesis {bytes(stored[0]).hex()[:16]}, "
                        f"given {genesis_hash.hex()[:16]}"
                    )
                return False
            check_limit("genesis state items", len(state_items), self.limits.state_writes_max)
            writes: list[StateWrite] = list(state_items)
            await self._transaction(writes, {META_GENESIS_HASH: genesis_hash})
            return True

    async def commit_block(self, commit: BlockCommit) -> None:
        async with self._lock:
            db = self._conn()
            if (
                await self._fetchone("SELECT 1 FROM meta WHERE key = ?", (META_GENESIS_HASH,))
                is None
            ):
                raise NotInitialized("commit_block before initialize()")
            check_commit(commit, self._latest_height, self.limits)

            async def body() -> None:
                await db.execute(
                    "INSERT INTO blocks (height, hash, block, certificate) VALUES (?, ?, ?, ?)",
                    (commit.height, commit.block_hash, commit.block, commit.certificate),
                )
                await self._write_receipts(commit)
                await self._write_txs(commit)

            await self._transaction(commit.state_writes, commit.metadata, body)
            self._latest_height = commit.height

    async def _write_receipts(self, commit: BlockCommit) -> None:
        rows = [(r.dst_shard, r.seq, commit.height, r.receipt, r.origin)
                for r in commit.receipts]
        for chunk in _chunks(rows, self.limits.sql_batch_rows):
            await self._conn().executemany(
                "INSERT INTO receipts (dst_shard, seq, height, receipt, origin) "
                "VALUES (?, ?, ?, ?, ?)",
                chunk,
            )
        inbound = [(r.src_shard, r.seq, r.origin, commit.height) for r in commit.inbound]
        for chunk in _chunks(inbound, self.limits.sql_batch_rows):
            await self._conn().executemany(
                "INSERT INTO inbound (src_shard, seq, origin, height) VALUES (?, ?, ?, ?)",
                chunk,
            )

    async def _write_txs(self, commit: BlockCommit) -> None:
        rows = [(t.tx_hash, t.height, t.position, t.outcome) for t in commit.txs]
        for chunk in _chunks(rows, self.limits.sql_batch_rows):
            await self._conn().executemany(
                "INSERT INTO txs (hash, height, position, outcome) VALUES (?, ?, ?, ?)", chunk
            )

    async def put_metadata(self, items: Mapping[str, bytes]) -> None:
        """Persist consensus metadata alone (a view change, a vote) before acting on it."""
        check_metadata(items, self.limits)
        async with self._lock:
            await self._transaction((), items)

    async def _transaction(
        self,
        state_writes: Sequence[StateWrite],
        metadata: Mapping[str, bytes],
        body: _Body | None = None,
    ) -> None:
        """Run ``body`` plus the state and metadata writes in one SQL transaction."""
        db = self._conn()
        await db.execute("BEGIN IMMEDIATE")
        try:
            if body is not None:
                await body()
            final = dict(state_writes)  # the last write of a key wins, as in order
            upserts = [(k, v) for k, v in final.items() if v is not None]
            deletes = [(k,) for k, v in final.items() if v is None]
            for chunk in _chunks(upserts, self.limits.sql_batch_rows):
                await db.executemany(
                    "INSERT INTO state (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    chunk,
                )
            for chunk in _chunks(deletes, self.limits.sql_batch_rows):
                await db.executemany("DELETE FROM state WHERE key = ?", chunk)
            if metadata:
                await db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    list(metadata.items()),
                )
            await db.execute("COMMIT")
        except BaseException as exc:
            # Also on cancellation: never leave the connection inside a transaction.
            if db.in_transaction:
                await db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise DuplicateEntry(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StoreError(str(exc)) from exc
            raise

    # -- reads -------------------------------------------------------------------

    async def get_metadata(self, key: str) -> bytes | None:
        async with self._lock:
            row = await self._fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    async def get_all_metadata(self) -> dict[str, bytes]:
        async with self._lock:
            return await self._all_metadata()

    async def _all_metadata(self) -> dict[str, bytes]:
        rows = await self._fetchall("SELECT key, value FROM meta ORDER BY key")
        return {str(r[0]): bytes(r[1]) for r in rows}

    async def latest_block(self) -> StoredBlock | None:
        async with self._lock:
            return await self._latest_block()

    async def _latest_block(self) -> StoredBlock | None:
        return _block(
            await self._fetchone(
                "SELECT height, hash, block, certificate FROM blocks ORDER BY height DESC LIMIT 1"
            )
        )

    async def get_block(self, height: int) -> StoredBlock | None:
        async with self._lock:
            return _block(
                await self._fetchone(
                    "SELECT height, hash, block, certificate FROM blocks WHERE height = ?",
                    (height,),
                )
            )

    async def get_block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        async with self._lock:
            return _block(
                await self._fetchone(
                    "SELECT height, hash, block, certificate FROM blocks WHERE hash = ?",
                    (block_hash,),
                )
            )

    async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
        last = min(last, first + self.limits.range_blocks_max - 1)
        blocks: list[StoredBlock] = []
        size = 0
        async with (
            self._lock,
            self._conn().execute(
                "SELECT height, hash, block, certificate FROM blocks "
                "WHERE height BETWEEN ? AND ? ORDER BY height",
                (first, last),
            ) as cursor,
        ):
            async for row in cursor:
                block = _block(row)
                if block is None:
                    break
                size += len(block.block) + len(block.certificate)
                if blocks and size > self.limits.range_bytes_max:
                    break
                blocks.append(block)
        return blocks

    async def get_tx(self, tx_hash: bytes) -> TxRecord | None:
        async with self._lock:
            row = await self._fetchone(
                "SELECT hash, height, position, outcome FROM txs WHERE hash = ?", (tx_hash,)
            )
        if row is None:
            return None
        return TxRecord(bytes(row[0]), int(row[1]), int(row[2]), bytes(row[3]))

    async def get_receipts(
        self, dst_shard: int, first_seq: int, last_seq: int
    ) -> list[ReceiptRecord]:
        limit = self.limits.range_receipts_max
        async with self._lock:
            rows = await self._fetchall(
                "SELECT dst_shard, seq, receipt, height, origin FROM receipts "
                "WHERE dst_shard = ? AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                (dst_shard, first_seq, last_seq, limit),
            )
        return [ReceiptRecord(int(r[0]), int(r[1]), bytes(r[2]), int(r[3]), bytes(r[4]))
                for r in rows]

    async def get_block_receipts(self, height: int) -> list[ReceiptRecord]:
        """Every outgoing receipt of the block at ``height`` (all destinations)."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT dst_shard, seq, receipt, height, origin FROM receipts "
                "WHERE height = ? ORDER BY dst_shard, seq", (height,))
        return [ReceiptRecord(int(r[0]), int(r[1]), bytes(r[2]), int(r[3]), bytes(r[4]))
                for r in rows]

    async def get_receipts_by_origin(self, origin: bytes) -> list[ReceiptRecord]:
        async with self._lock:
            rows = await self._fetchall(
                "SELECT dst_shard, seq, receipt, height, origin FROM receipts "
                "WHERE origin = ? ORDER BY dst_shard, seq LIMIT ?",
                (origin, ORIGIN_RECORDS_MAX))
        return [ReceiptRecord(int(r[0]), int(r[1]), bytes(r[2]), int(r[3]), bytes(r[4]))
                for r in rows]

    async def get_inbound_by_origin(self, origin: bytes) -> list[InboundRecord]:
        async with self._lock:
            rows = await self._fetchall(
                "SELECT src_shard, seq, origin, height FROM inbound "
                "WHERE origin = ? ORDER BY src_shard, seq LIMIT ?",
                (origin, ORIGIN_RECORDS_MAX))
        return [InboundRecord(int(r[0]), int(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    async def get_state(self, key: bytes) -> bytes | None:
        async with self._lock:
            row = await self._fetchone("SELECT value FROM state WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    async def state_page(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """State items with key > ``after`` in key order (start with ``b""``)."""
        async with self._lock:
            return await self._state_page(after, limit)

    async def _state_page(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        limit = max(1, min(limit, self.limits.state_page_items))
        rows = await self._fetchall(
            "SELECT key, value FROM state WHERE key > ? ORDER BY key LIMIT ?", (after, limit)
        )
        return [(bytes(r[0]), bytes(r[1])) for r in rows]

    async def load_snapshot(self) -> Snapshot:
        """Latest block, all state items and metadata as of one instant (for start-up)."""
        async with self._lock:
            items: list[tuple[bytes, bytes]] = []
            after = b""
            while True:
                page = await self._state_page(after, self.limits.state_page_items)
                items.extend(page)
                if len(page) < self.limits.state_page_items:
                    break
                after = page[-1][0]
            return Snapshot(await self._latest_block(), items, await self._all_metadata())

    async def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` ("ok" when the file is sound)."""
        async with self._lock:
            row = await self._fetchone("PRAGMA integrity_check")
        return "" if row is None else str(row[0])


def _lock_file(path: Path) -> int:
    """Hold an exclusive advisory lock on ``PATH.lock`` for the store's lifetime: two
    nodes pointed at one data directory must fail at start-up, not corrupt each
    other's chain. The kernel drops the lock when the process dies, even by SIGKILL."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{path} is open in another store") from None
    return fd


class _Body(Protocol):
    async def __call__(self) -> None: ...


def _block(row: sqlite3.Row | None) -> StoredBlock | None:
    if row is None:
        return None
    return StoredBlock(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]))
