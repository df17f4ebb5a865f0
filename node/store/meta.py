"""The ``meta`` table: the genesis hash and the consensus metadata (view, votes,
checkpoints, a prepared block) the replica persists before acting on it.

``write_metadata`` and ``metadata`` are synchronous: they run on the connection's
thread (``Db.run``), ``metadata`` also inside a commit (its genesis check)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from node.store.db import Db


def write_metadata(conn: sqlite3.Connection, items: Mapping[str, bytes]) -> None:
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        list(items.items()),
    )


def metadata(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])


async def all_metadata(db: Db) -> dict[str, bytes]:
    rows = await db.all("SELECT key, value FROM meta ORDER BY key")
    return {str(r[0]): bytes(r[1]) for r in rows}
