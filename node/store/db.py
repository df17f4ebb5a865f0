"""One SQLite connection through aiosqlite: reads, batched writes, the transaction
every write runs in, and the file lock that keeps a second store off the file.

No table is named here; the table modules (blocks, receipts, state, meta) hold the SQL.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import aiosqlite

from node.store.errors import DuplicateEntry, StoreClosed, StoreError, StoreLocked

Row = tuple[object, ...]


class Body(Protocol):
    async def __call__(self) -> None: ...


class Db:
    """The connection and the batch size of ``execute_many``; closed once."""

    def __init__(self, conn: aiosqlite.Connection, batch_rows: int) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self._batch_rows = batch_rows

    @property
    def closed(self) -> bool:
        return self._conn is None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreClosed("store is closed")
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        await self.conn.execute(sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Row]) -> None:
        """``executemany`` in batches of ``batch_rows`` rows."""
        for i in range(0, len(rows), self._batch_rows):
            await self.conn.executemany(sql, rows[i : i + self._batch_rows])

    async def one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def all(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    def cursor(
        self, sql: str, params: Sequence[object] = ()
    ) -> AbstractAsyncContextManager[aiosqlite.Cursor]:
        """A cursor to iterate with ``async for`` (rows fetched as they are read)."""
        return self.conn.execute(sql, params)

    async def transaction(self, body: Body) -> None:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` .. ``COMMIT``. Any failure, the task
        being cancelled included, rolls it all back; SQLite's errors become ours."""
        conn = self.conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await body()
            await conn.execute("COMMIT")
        except BaseException as exc:
            # Also on cancellation: never leave the connection inside a transaction.
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise DuplicateEntry(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StoreError(str(exc)) from exc
            raise


def lock_file(path: Path) -> int:
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


def unlock_file(fd: int) -> None:
    os.close(fd)  # releases the flock
