"""The ``meta`` table: the genesis hash and the consensus metadata (view, votes,
checkpoints, a prepared block) the replica persists before acting on it."""

from __future__ import annotations

from collections.abc import Mapping

from node.store.db import Db


async def write_metadata(db: Db, items: Mapping[str, bytes]) -> None:
    await db.execute_many(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        list(items.items()),
    )


async def get_metadata(db: Db, key: str) -> bytes | None:
    row = await db.one("SELECT value FROM meta WHERE key = ?", (key,))
    return None if row is None else bytes(row[0])


async def all_metadata(db: Db) -> dict[str, bytes]:
    rows = await db.all("SELECT key, value FROM meta ORDER BY key")
    return {str(r[0]): bytes(r[1]) for r in rows}
