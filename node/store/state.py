"""The ``state`` table: the shard state, key -> value, as of the last stored block.
Writes are synchronous (on the connection's thread, inside a transaction); reads async."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from node.store.checks import StoreLimits, page_items
from node.store.db import Db
from node.store.records import StateWrite, final_writes


def write_state(conn: sqlite3.Connection, writes: Sequence[StateWrite]) -> None:
    """Apply ``writes`` (None deletes the key; the last write of a key wins)."""
    final = final_writes(writes)
    conn.executemany(
        "INSERT INTO state (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, v) for k, v in final.items() if v is not None],
    )
    conn.executemany(
        "DELETE FROM state WHERE key = ?", [(k,) for k, v in final.items() if v is None]
    )


async def get_state(db: Db, key: bytes) -> bytes | None:
    row = await db.one("SELECT value FROM state WHERE key = ?", (key,))
    return None if row is None else bytes(row[0])


async def state_page(
    db: Db, after: bytes, limit: int, limits: StoreLimits
) -> list[tuple[bytes, bytes]]:
    """State items with key > ``after`` in key order (start with ``b""``)."""
    rows = await db.all(
        "SELECT key, value FROM state WHERE key > ? ORDER BY key LIMIT ?",
        (after, page_items(limit, limits)),
    )
    return [(bytes(r[0]), bytes(r[1])) for r in rows]


async def all_state(db: Db, limits: StoreLimits) -> list[tuple[bytes, bytes]]:
    """Every state item in key order, read page by page."""
    items: list[tuple[bytes, bytes]] = []
    after = b""
    while True:
        page = await state_page(db, after, limits.state_page_items, limits)
        items.extend(page)
        if len(page) < limits.state_page_items:
            return items
        after = page[-1][0]
