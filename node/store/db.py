"""One SQLite connection through aiosqlite: reads, ``run`` (a synchronous function
on the connection's own thread, in one hop: how every write runs), the transaction
every write runs in, and the file lock that keeps a second store off the file.

No table is named here; the table modules (blocks, receipts, state, meta, accounts)
hold the SQL.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from node.store.errors import DuplicateEntry, StoreClosed, StoreError, StoreLocked

T = TypeVar("T")


class Db:
    """The connection; closed once."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn: aiosqlite.Connection | None = conn

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

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's own thread: ONE hop there and back,
        however many statements ``fn`` runs (each ``await`` of aiosqlite is a hop, and
        with eight node processes on two cores each hop waits for a core).

        A thread cannot be interrupted: if the awaiting task is cancelled while ``fn``
        is queued or running, ``fn`` still runs to its end (a transaction in it commits
        or rolls back whole), and ``run`` waits for that end before it raises
        ``CancelledError``, so the caller's lock and memory never run ahead of the file.
        """
        job = asyncio.ensure_future(_on_thread(self.conn, fn))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            while not job.done():
                try:
                    await asyncio.wait((job,))
                except asyncio.CancelledError:
                    continue  # cancelled again: the thread is still in ``fn``
            if not job.cancelled():
                job.exception()  # retrieved: the caller asked to stop, not for ``fn``'s error
            raise


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    # aiosqlite (0.22, pinned < 0.23 in pyproject.toml) has no public "run this function
    # on the connection's thread"; ``Connection._execute(fn)`` queues ``fn`` to that
    # thread and awaits its result, and ``Connection._conn`` is the ``sqlite3.Connection``
    # it owns. This is the one place the store reaches them; a future aiosqlite without
    # them fails tests/node/test_store.py::test_db_run_is_one_call_on_the_connection_thread.
    result: T = await conn._execute(lambda: fn(conn._conn))  # type: ignore[no-untyped-call]
    return result


def transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """``body`` in one ``BEGIN IMMEDIATE`` .. ``COMMIT``, synchronously: call it inside
    ``Db.run``. Any failure in it rolls it all back; SQLite's errors become ours."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:  # never leave the connection inside a transaction
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise DuplicateEntry(str(exc)) from exc
        if isinstance(exc, sqlite3.Error):
            raise StoreError(str(exc)) from exc
        raise
    return result


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
