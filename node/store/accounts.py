"""The ``account_txs`` index: which transactions an account took part in, newest
first, a page at a time (``GET /v1/accounts/{address}/txs``).

One row per (address, block, entry): the sender and each address a call names
(``recipient``) of every committed transaction, and the credited account of every
inbound cross-shard receipt applied (``credit``: the destination shard's hop of a
cross-shard transfer, keyed by the originating transaction's hash). Rows are
written in the block's commit transaction, so the index never runs ahead of or
behind the blocks. ``cursor = height << ORDINAL_BITS | ordinal`` orders them; a
page is ``cursor < before`` in descending order, at most ``ACCOUNT_TXS_PAGE_MAX``.
``Store`` and ``MemoryStore`` answer the same pages (test_store_equivalence.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from node.store.checks import StoreLimits, check_limit
from node.store.db import Db
from node.store.errors import DuplicateEntry, StoreError
from node.store.records import AccountTxRecord, BlockCommit

ORDINAL_BITS = 20  # entries of one block: inbound receipts + txs (each <= 100,000 by default)
ORDINAL_MAX = (1 << ORDINAL_BITS) - 1
CURSOR_MAX = 2**63 - 1  # SQLite integers are signed 64-bit
ACCOUNT_TXS_PAGE_MAX = 1000
ROLES = ("sender", "recipient", "credit")

SCHEMA = """
CREATE TABLE account_txs (
    address BLOB NOT NULL,
    cursor INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (address, cursor)
) WITHOUT ROWID;
"""


def cursor_of(height: int, ordinal: int) -> int:
    return (height << ORDINAL_BITS) | ordinal


def record_of(address: bytes, cursor: int, tx_hash: bytes, role: str) -> AccountTxRecord:
    return AccountTxRecord(address, cursor >> ORDINAL_BITS, cursor & ORDINAL_MAX, tx_hash, role)


def check_account_txs(commit: BlockCommit, limits: StoreLimits) -> None:
    """Every entry belongs to the commit's height, names a known role and an ordinal
    in range, and (address, ordinal) is unique: refused before anything is written."""
    entries = commit.account_txs
    check_limit("account tx entries", len(entries), 4 * (limits.txs_max + limits.receipts_max))
    seen: set[tuple[bytes, int]] = set()
    for entry in entries:
        if entry.height != commit.height:
            raise StoreError(
                f"account tx height {entry.height} != block height {commit.height}")
        if not 0 <= entry.ordinal <= ORDINAL_MAX or entry.role not in ROLES:
            raise StoreError(f"account tx entry {entry.ordinal}/{entry.role!r}")
        key = (entry.address, entry.ordinal)
        if key in seen:
            raise DuplicateEntry("account tx entry (address, ordinal)")
        seen.add(key)


def page_limit(limit: int) -> int:
    return max(1, min(limit, ACCOUNT_TXS_PAGE_MAX))


def memory_page(entries: Iterable[AccountTxRecord], address: bytes, before: int,
                limit: int) -> list[AccountTxRecord]:
    """The page ``MemoryStore`` answers, the same as ``account_page`` on SQLite."""
    found = sorted((e for e in entries if e.address == address
                    and cursor_of(e.height, e.ordinal) < before),
                   key=lambda e: cursor_of(e.height, e.ordinal), reverse=True)
    return found[: page_limit(limit)]


def insert_account_txs(conn: sqlite3.Connection, commit: BlockCommit) -> None:
    """Synchronous: on the connection's thread, inside the commit's transaction."""
    conn.executemany(
        "INSERT INTO account_txs (address, cursor, tx_hash, role) VALUES (?, ?, ?, ?)",
        [(e.address, cursor_of(commit.height, e.ordinal), e.tx_hash, e.role)
         for e in commit.account_txs],
    )


async def account_page(db: Db, address: bytes, before: int, limit: int
                       ) -> list[AccountTxRecord]:
    rows = await db.all(
        "SELECT address, cursor, tx_hash, role FROM account_txs "
        "WHERE address = ? AND cursor < ? ORDER BY cursor DESC LIMIT ?",
        (address, before, page_limit(limit)),
    )
    return [record_of(bytes(r[0]), int(r[1]), bytes(r[2]), str(r[3])) for r in rows]
