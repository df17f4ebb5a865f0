"""The store's tables and the version a file must carry.

``prepare`` creates the schema in an empty file and refuses a file of another
version or a foreign SQLite file (``SchemaMismatch``). There are no migrations:
a store of another version is refused, and a node rebuilds it by block sync.
Version 2 added the receipts' height and origin and the inbound table; version 3
the ``account_txs`` index (its DDL lives in node/store/accounts.py).
"""

from __future__ import annotations

from pathlib import Path

from node.store import accounts
from node.store.db import Db
from node.store.errors import SchemaMismatch

SCHEMA_VERSION = 3  # 2: receipts by height and origin, inbound applied; 3: account_txs

SCHEMA = """
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
""" + accounts.SCHEMA


async def prepare(db: Db, path: Path) -> None:
    """Create the schema in an empty file; refuse any other version or file."""
    tables = await db.all(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
    )
    if not tables:
        if await db.all("SELECT name FROM sqlite_master"):
            raise SchemaMismatch(f"{path}: not a shardnet store")
        await _create(db)
    rows = await db.all("SELECT version FROM schema_version")
    if [r[0] for r in rows] != [SCHEMA_VERSION]:
        raise SchemaMismatch(
            f"{path}: schema version {[r[0] for r in rows]}, this build reads {SCHEMA_VERSION}"
        )


async def _create(db: Db) -> None:
    # SQLite's errors propagate as they are: ``Store.open`` names the file in them.
    await db.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.strip().split(";"):
            if statement.strip():
                await db.execute(statement)
        await db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
