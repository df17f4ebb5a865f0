"""The ``receipts`` table (outgoing cross-shard receipts by destination and
sequence, by height and by origin) and the ``inbound`` table (receipts this shard
applied, by origin). Rows in (synchronous, on the connection's thread inside the
commit's transaction), records out."""

from __future__ import annotations

import sqlite3

from node.store.checks import ORIGIN_RECORDS_MAX
from node.store.db import Db
from node.store.records import BlockCommit, InboundRecord, ReceiptRecord

_RECEIPT = "SELECT dst_shard, seq, receipt, height, origin FROM receipts"


def insert_receipts(conn: sqlite3.Connection, commit: BlockCommit) -> None:
    """The commit's outgoing receipts, stored with the block's height."""
    conn.executemany(
        "INSERT INTO receipts (dst_shard, seq, height, receipt, origin) VALUES (?, ?, ?, ?, ?)",
        [(r.dst_shard, r.seq, commit.height, r.receipt, r.origin) for r in commit.receipts],
    )


def insert_inbound(conn: sqlite3.Connection, commit: BlockCommit) -> None:
    """The commit's applied inbound receipts, stored with the block's height."""
    conn.executemany(
        "INSERT INTO inbound (src_shard, seq, origin, height) VALUES (?, ?, ?, ?)",
        [(r.src_shard, r.seq, r.origin, commit.height) for r in commit.inbound],
    )


async def receipts_between(
    db: Db, dst_shard: int, first_seq: int, last_seq: int, limit: int
) -> list[ReceiptRecord]:
    rows = await db.all(
        f"{_RECEIPT} WHERE dst_shard = ? AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
        (dst_shard, first_seq, last_seq, limit),
    )
    return [_receipt(r) for r in rows]


async def block_receipts(db: Db, height: int) -> list[ReceiptRecord]:
    rows = await db.all(f"{_RECEIPT} WHERE height = ? ORDER BY dst_shard, seq", (height,))
    return [_receipt(r) for r in rows]


async def receipts_by_origin(db: Db, origin: bytes) -> list[ReceiptRecord]:
    rows = await db.all(
        f"{_RECEIPT} WHERE origin = ? ORDER BY dst_shard, seq LIMIT ?",
        (origin, ORIGIN_RECORDS_MAX),
    )
    return [_receipt(r) for r in rows]


async def inbound_by_origin(db: Db, origin: bytes) -> list[InboundRecord]:
    rows = await db.all(
        "SELECT src_shard, seq, origin, height FROM inbound "
        "WHERE origin = ? ORDER BY src_shard, seq LIMIT ?",
        (origin, ORIGIN_RECORDS_MAX),
    )
    return [InboundRecord(int(r[0]), int(r[1]), bytes(r[2]), int(r[3])) for r in rows]


def _receipt(r: sqlite3.Row) -> ReceiptRecord:
    return ReceiptRecord(int(r[0]), int(r[1]), bytes(r[2]), int(r[3]), bytes(r[4]))
