"""Node storage: round trips, atomicity, ordering, bounds, schema checks.

Every behavioural test runs against both ``Store`` (SQLite) and ``MemoryStore``:
the in-memory one must behave like the real one for tests of the node to mean
anything.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from consensus.kernel.crypto import sha256
from node.store import (
    BlockCommit,
    DuplicateEntry,
    GenesisMismatch,
    LimitExceeded,
    NotInitialized,
    OutOfOrderCommit,
    ReceiptRecord,
    SchemaMismatch,
    Store,
    StoreAPI,
    StoreClosed,
    StoreError,
    StoreLimits,
    StoreLocked,
    TxRecord,
    blocks,
)
from node.store.memory import MemoryStore

GENESIS = sha256(b"genesis")
GENESIS_ITEMS = [(b"acct:%d" % i, b"balance:100") for i in range(10)]


def make_commit(height: int, *, txs: int = 3, receipts: int = 2, dst: int = 1) -> BlockCommit:
    block_hash = sha256(b"block%d" % height)
    return BlockCommit(
        height=height,
        block_hash=block_hash,
        block=b"BLOCK" + height.to_bytes(8, "big") * 10,
        certificate=b"CERT" + block_hash,
        state_writes=[
            (b"acct:%d" % (height % 10), b"balance:%d" % height),
            (b"new:%d" % height, b"x"),
            (b"new:%d" % (height - 1), None),  # delete last block's key
        ],
        receipts=[
            ReceiptRecord(dst, (height - 1) * receipts + i + 1, b"receipt%d.%d" % (height, i))
            for i in range(receipts)
        ],
        txs=[TxRecord(sha256(b"tx%d.%d" % (height, i)), height, i, b"ok") for i in range(txs)],
        metadata={"view": height.to_bytes(8, "big"), "stable_checkpoint": b"cp%d" % height},
    )


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreAPI]:
    s: StoreAPI
    if request.param == "sqlite":
        s = await Store.open(tmp_path / "node.db", limits=StoreLimits(range_blocks_max=5))
    else:
        s = MemoryStore(StoreLimits(range_blocks_max=5))
    await s.initialize(GENESIS, GENESIS_ITEMS)
    yield s
    await s.close()


async def test_round_trip_of_every_record(store: StoreAPI) -> None:
    for height in range(1, 4):
        await store.commit_block(make_commit(height))
    latest = await store.latest_block()
    assert latest is not None and latest.height == 3
    assert latest.block_hash == sha256(b"block3")
    assert latest.certificate == b"CERT" + sha256(b"block3")
    assert await store.get_block(2) == (await store.get_blocks(2, 2))[0]
    by_hash = await store.get_block_by_hash(sha256(b"block1"))
    assert by_hash is not None and by_hash.height == 1
    assert await store.get_block(4) is None
    assert await store.get_block_by_hash(b"\x00" * 32) is None
    assert [b.height for b in await store.get_blocks(1, 10)] == [1, 2, 3]

    tx = await store.get_tx(sha256(b"tx2.1"))
    assert tx == TxRecord(sha256(b"tx2.1"), 2, 1, b"ok")
    assert await store.get_tx(sha256(b"nope")) is None

    receipts = await store.get_receipts(1, 2, 5)
    assert [(r.seq, r.height, r.receipt) for r in receipts] == [
        (2, 1, b"receipt1.1"),
        (3, 2, b"receipt2.0"),
        (4, 2, b"receipt2.1"),
        (5, 3, b"receipt3.0"),
    ]
    assert await store.get_receipts(0, 0, 100) == []

    assert await store.get_state(b"acct:3") == b"balance:3"
    assert await store.get_state(b"acct:9") == b"balance:100"
    assert await store.get_state(b"new:3") == b"x"
    assert await store.get_state(b"new:2") is None  # deleted by block 3
    assert await store.get_metadata("view") == (3).to_bytes(8, "big")
    assert await store.get_metadata("absent") is None
    meta = await store.get_all_metadata()
    assert meta["stable_checkpoint"] == b"cp3"

    snapshot = await store.load_snapshot()
    assert snapshot.latest == latest
    expected = dict(GENESIS_ITEMS)
    expected.update({b"acct:1": b"balance:1", b"acct:2": b"balance:2", b"acct:3": b"balance:3"})
    expected[b"new:3"] = b"x"
    assert dict(snapshot.state_items) == expected
    assert snapshot.state_items == sorted(snapshot.state_items)
    assert snapshot.metadata == meta


async def test_state_pages_walk_every_item_in_key_order(store: StoreAPI) -> None:
    seen: list[tuple[bytes, bytes]] = []
    after = b""
    while page := await store.state_page(after, 3):
        assert len(page) <= 3
        seen.extend(page)
        after = page[-1][0]
    assert seen == sorted(GENESIS_ITEMS)


async def test_commit_rejects_a_height_that_does_not_follow(store: StoreAPI) -> None:
    await store.commit_block(make_commit(1))
    for height in (1, 3, 0):
        with pytest.raises(OutOfOrderCommit):
            await store.commit_block(make_commit(height))
    await store.commit_block(make_commit(2))


async def test_commit_rejects_a_duplicate_tx_and_writes_nothing(store: StoreAPI) -> None:
    await store.commit_block(make_commit(1))
    bad = make_commit(2)
    bad = BlockCommit(
        **{
            **{f: getattr(bad, f) for f in bad.__slots__},
            "txs": [*bad.txs, TxRecord(sha256(b"tx1.0"), 2, 3, b"dup")],
        }
    )
    before = await store.load_snapshot()
    with pytest.raises(DuplicateEntry):
        await store.commit_block(bad)
    assert await store.load_snapshot() == before
    assert await store.get_block(2) is None
    assert await store.get_tx(sha256(b"tx2.0")) is None
    assert await store.get_receipts(1, 3, 4) == []
    await store.commit_block(make_commit(2))  # the store stays usable


async def test_commit_rejects_a_duplicate_receipt_sequence(store: StoreAPI) -> None:
    await store.commit_block(make_commit(1))
    bad = make_commit(2)
    bad = BlockCommit(
        **{
            **{f: getattr(bad, f) for f in bad.__slots__},
            "receipts": [ReceiptRecord(1, 1, b"replayed")],
        }
    )
    with pytest.raises(DuplicateEntry):
        await store.commit_block(bad)
    assert (await store.get_receipts(1, 1, 1))[0].receipt == b"receipt1.0"
    assert await store.get_block(2) is None


async def test_commit_before_initialize_is_refused(tmp_path: Path) -> None:
    for s in (await Store.open(tmp_path / "a.db"), MemoryStore()):
        with pytest.raises(NotInitialized):
            await s.commit_block(make_commit(1))
        await s.close()


async def test_initialize_is_idempotent_and_refuses_another_genesis(store: StoreAPI) -> None:
    assert await store.initialize(GENESIS, [(b"other", b"item")]) is False
    assert await store.get_state(b"other") is None
    with pytest.raises(GenesisMismatch):
        await store.initialize(sha256(b"another testnet"), GENESIS_ITEMS)


async def test_commit_over_the_limits_is_refused(store: StoreAPI) -> None:
    limits = store.limits  # type: ignore[attr-defined]
    too_many = make_commit(1, txs=limits.txs_max + 1)
    with pytest.raises(LimitExceeded):
        await store.commit_block(too_many)
    with pytest.raises(LimitExceeded):
        await store.put_metadata({f"k{i}": b"" for i in range(limits.metadata_items_max + 1)})
    assert await store.latest_block() is None


async def test_range_reads_are_bounded(store: StoreAPI) -> None:
    for height in range(1, 9):
        await store.commit_block(make_commit(height, receipts=3))
    blocks = await store.get_blocks(2, 100)
    assert [b.height for b in blocks] == [2, 3, 4, 5, 6]  # range_blocks_max = 5
    assert len(await store.get_receipts(1, 1, 10**9)) == 24


async def test_block_range_is_bounded_by_bytes(tmp_path: Path) -> None:
    limits = StoreLimits(range_bytes_max=250)
    for s in (await Store.open(tmp_path / "b.db", limits=limits), MemoryStore(limits)):
        await s.initialize(GENESIS, [])
        for height in range(1, 6):
            await s.commit_block(make_commit(height))  # ~121 bytes of block + certificate
        assert [b.height for b in await s.get_blocks(1, 5)] == [1, 2]
        assert [b.height for b in await s.get_blocks(5, 5)] == [5]
        await s.close()


async def test_put_metadata_alone(store: StoreAPI) -> None:
    await store.put_metadata({"view": b"\x07"})
    assert await store.get_metadata("view") == b"\x07"


async def test_closed_store_refuses_calls(store: StoreAPI) -> None:
    await store.close()
    with pytest.raises(StoreClosed):
        await store.latest_block()
    await store.close()  # idempotent


# --- SQLite only --------------------------------------------------------------------


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    s = await Store.open(path)
    await s.initialize(GENESIS, GENESIS_ITEMS)
    for height in range(5):
        await s.commit_block(make_commit(height))
    before = await s.load_snapshot()
    await s.close()
    s = await Store.open(path)
    assert s.latest_height == 4
    assert await s.load_snapshot() == before
    await s.commit_block(make_commit(5))
    await s.close()


async def test_sqlite_uses_wal_and_the_chosen_synchronous_level(tmp_path: Path) -> None:
    for level, expected in (("FULL", 2), ("NORMAL", 1)):
        s = await Store.open(tmp_path / f"{level}.db", synchronous=level)  # type: ignore[arg-type]
        db = s._db.conn
        async with db.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"  # type: ignore[index]
        async with db.execute("PRAGMA synchronous") as cur:
            assert (await cur.fetchone())[0] == expected  # type: ignore[index]
        assert await s.integrity_check() == "ok"
        await s.close()
    with pytest.raises(StoreError):
        await Store.open(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_open_refuses_another_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaMismatch):
        await Store.open(path)


async def test_open_refuses_a_foreign_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE something (x)")
    with pytest.raises(SchemaMismatch):
        await Store.open(path)


async def test_open_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database" * 1000)
    with pytest.raises(StoreError):
        await Store.open(path)


async def test_failure_injected_mid_commit_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.db"
    s = await Store.open(path)
    await s.initialize(GENESIS, GENESIS_ITEMS)
    await s.commit_block(make_commit(1))
    before = await s.load_snapshot()

    def boom(conn: sqlite3.Connection, commit: BlockCommit) -> None:
        raise RuntimeError("disk on fire")  # after the block and receipts rows went in

    monkeypatch.setattr(blocks, "insert_txs", boom)
    with pytest.raises(RuntimeError):
        await s.commit_block(make_commit(2))
    assert s.latest_height == 1
    assert await s.load_snapshot() == before
    assert await s.get_receipts(1, 3, 4) == []
    monkeypatch.undo()
    await s.close()

    s = await Store.open(path)  # and nothing surfaces after a reopen either
    assert await s.load_snapshot() == before
    await s.commit_block(make_commit(2))
    await s.close()


async def test_db_run_is_one_call_on_the_connection_thread(tmp_path: Path) -> None:
    """``Db.run`` reaches aiosqlite's private ``Connection._execute`` and ``_conn``
    (node/store/db.py says why): this fails loudly if an aiosqlite release drops them."""
    s = await Store.open(tmp_path / "node.db")
    conn = s._db.conn
    assert callable(getattr(aiosqlite.Connection, "_execute", None)), "aiosqlite._execute gone"
    assert isinstance(conn._conn, sqlite3.Connection), "aiosqlite.Connection._conn gone"
    ident, same = await s._db.run(lambda c: (threading.get_ident(), c is conn._conn))
    assert same and ident == conn._thread.ident != threading.get_ident()
    await s.close()


async def test_every_write_is_one_hop_to_the_connection_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await Store.open(tmp_path / "node.db")
    conn = s._db.conn
    hops = 0
    execute = conn._execute

    async def counted(fn: object, *args: object) -> object:
        nonlocal hops
        hops += 1
        return await execute(fn, *args)

    monkeypatch.setattr(conn, "_execute", counted)
    assert await s.initialize(GENESIS, GENESIS_ITEMS)
    assert hops == 1
    await s.commit_block(make_commit(1, txs=50, receipts=20))
    assert hops == 2
    await s.put_metadata({"view": b"v"})
    assert hops == 3
    with pytest.raises(OutOfOrderCommit):  # refused on the thread: still one hop
        await s.commit_block(make_commit(5))
    assert hops == 4
    assert s.latest_height == 1 and await s.get_tx(sha256(b"tx1.49")) is not None
    await s.close()


async def _cancel_while_on_the_thread(
    s: Store, monkeypatch: pytest.MonkeyPatch, *, fail: bool
) -> None:
    """Commit block 1 with ``insert_txs`` held on the connection's thread, cancel the
    task (twice) while it is held, check the task waits for the thread, release it
    (to finish, or to fail when ``fail``): the task ends cancelled either way."""
    entered, release = threading.Event(), threading.Event()
    insert_txs = blocks.insert_txs

    def held(conn: sqlite3.Connection, commit: BlockCommit) -> None:
        entered.set()
        assert release.wait(10)
        if fail:
            raise RuntimeError("disk on fire")
        insert_txs(conn, commit)

    monkeypatch.setattr(blocks, "insert_txs", held)
    task = asyncio.create_task(s.commit_block(make_commit(1)))
    assert await asyncio.to_thread(entered.wait, 10)
    for _ in range(2):
        task.cancel()
        for _ in range(20):
            await asyncio.sleep(0)  # let the cancellation be delivered (no timing)
        assert not task.done()  # still waiting for the thread, holding the lock
    assert s.latest_height is None
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()


async def test_a_commit_cancelled_on_the_thread_still_commits_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.db"
    s = await Store.open(path)
    await s.initialize(GENESIS, GENESIS_ITEMS)
    await _cancel_while_on_the_thread(s, monkeypatch, fail=False)
    assert s.latest_height == 1  # memory agrees with the file
    latest = await s.latest_block()
    assert latest is not None and latest.height == 1
    assert await s.get_tx(sha256(b"tx1.2")) is not None
    assert await s.get_metadata("view") == (1).to_bytes(8, "big")
    await s.commit_block(make_commit(2))
    await s.close()
    s = await Store.open(path)
    assert s.latest_height == 2 and await s.integrity_check() == "ok"
    await s.close()


async def test_a_commit_cancelled_on_the_thread_that_fails_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.db"
    s = await Store.open(path)
    await s.initialize(GENESIS, GENESIS_ITEMS)
    before = await s.load_snapshot()
    await _cancel_while_on_the_thread(s, monkeypatch, fail=True)
    assert s.latest_height is None
    assert await s.load_snapshot() == before
    assert await s.get_receipts(1, 1, 2) == []
    await s.commit_block(make_commit(1))
    assert s.latest_height == 1
    await s.close()
    s = await Store.open(path)
    assert s.latest_height == 1
    await s.close()


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    first = await Store.open(path)
    with pytest.raises(StoreLocked):
        await Store.open(path)
    await first.close()
    second = await Store.open(path)  # the lock goes with the store
    await second.close()
