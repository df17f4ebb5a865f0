"""The ``blocks`` and ``txs`` tables: committed blocks with their certificates, and
where each transaction is and how it ended. Rows in (synchronous, on the
connection's thread inside the commit's transaction), records out."""

from __future__ import annotations

import sqlite3

from node.store.checks import BlockRange, StoreLimits, range_last
from node.store.db import Db
from node.store.records import BlockCommit, StoredBlock, TxRecord

_BLOCK = "SELECT height, hash, block, certificate FROM blocks"


def insert_block(conn: sqlite3.Connection, commit: BlockCommit) -> None:
    conn.execute(
        "INSERT INTO blocks (height, hash, block, certificate) VALUES (?, ?, ?, ?)",
        (commit.height, commit.block_hash, commit.block, commit.certificate),
    )


def insert_txs(conn: sqlite3.Connection, commit: BlockCommit) -> None:
    conn.executemany(
        "INSERT INTO txs (hash, height, position, outcome) VALUES (?, ?, ?, ?)",
        [(t.tx_hash, t.height, t.position, t.outcome) for t in commit.txs],
    )


async def latest_height(db: Db) -> int | None:
    row = await db.one("SELECT MAX(height) FROM blocks")
    return None if row is None or row[0] is None else int(row[0])


async def latest_block(db: Db) -> StoredBlock | None:
    return _block(await db.one(f"{_BLOCK} ORDER BY height DESC LIMIT 1"))


async def block_at(db: Db, height: int) -> StoredBlock | None:
    return _block(await db.one(f"{_BLOCK} WHERE height = ?", (height,)))


async def block_by_hash(db: Db, block_hash: bytes) -> StoredBlock | None:
    return _block(await db.one(f"{_BLOCK} WHERE hash = ?", (block_hash,)))


async def blocks_between(
    db: Db, first: int, last: int, limits: StoreLimits
) -> list[StoredBlock]:
    """Blocks ``first..last`` in height order, as many as one range answer holds."""
    answer = BlockRange(limits)
    async with db.cursor(
        f"{_BLOCK} WHERE height BETWEEN ? AND ? ORDER BY height",
        (first, range_last(first, last, limits)),
    ) as cursor:
        async for row in cursor:
            block = _block(row)
            if block is None or not answer.add(block):
                break
    return answer.blocks


async def tx(db: Db, tx_hash: bytes) -> TxRecord | None:
    row = await db.one(
        "SELECT hash, height, position, outcome FROM txs WHERE hash = ?", (tx_hash,)
    )
    if row is None:
        return None
    return TxRecord(bytes(row[0]), int(row[1]), int(row[2]), bytes(row[3]))


def _block(row: sqlite3.Row | None) -> StoredBlock | None:
    if row is None:
        return None
    return StoredBlock(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]))
