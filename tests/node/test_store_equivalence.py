"""``MemoryStore`` behaves like ``Store``: the same random commits, duplicates and
out-of-order heights included, give the same errors and the same reads."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.store import (
    AccountTxRecord,
    BlockCommit,
    ReceiptRecord,
    Store,
    StoreAPI,
    StoreError,
    StoreLimits,
    TxRecord,
)
from node.store.memory import MemoryStore

keys = st.sampled_from([b"a", b"b", b"c", b"k"])
small_hash = st.sampled_from([bytes([i]) * 32 for i in range(6)])


@st.composite
def commits(draw: st.DrawFn) -> BlockCommit:
    height = draw(st.integers(0, 6))
    return BlockCommit(
        height=height,
        block_hash=draw(small_hash),
        block=draw(st.binary(max_size=20)),
        certificate=draw(st.binary(max_size=8)),
        state_writes=draw(st.lists(st.tuples(keys, st.none() | st.binary(max_size=4)), max_size=5)),
        receipts=[
            ReceiptRecord(dst, seq, b"r")
            for dst, seq in draw(
                st.lists(st.tuples(st.integers(0, 1), st.integers(1, 6)), max_size=3, unique=True)
            )
        ],
        txs=[
            TxRecord(h, height, i, b"o")
            for i, h in enumerate(draw(st.lists(small_hash, max_size=3, unique=True)))
        ],
        # Index rows: duplicates, another height and an unknown role are refused alike.
        account_txs=[
            AccountTxRecord(address, height + draw(st.sampled_from([0, 0, 0, 0, 1])), ordinal,
                            h, draw(st.sampled_from(["sender", "recipient", "credit", "x"])))
            for address, ordinal, h in draw(st.lists(
                st.tuples(st.sampled_from([b"A" * 32, b"B" * 32]), st.integers(0, 3),
                          small_hash), max_size=4))
        ],
        metadata=draw(st.dictionaries(st.sampled_from(["view", "cp"]), st.binary(max_size=2))),
    )


async def run(store: StoreAPI, batch: list[BlockCommit]) -> list[object]:
    seen: list[object] = []
    await store.initialize(b"g" * 32, [(b"k", b"v")])
    for commit in batch:
        try:
            await store.commit_block(commit)
            seen.append("ok")
        except StoreError as exc:
            seen.append(type(exc).__name__)
    seen.append(await store.load_snapshot())
    seen.append(await store.get_blocks(0, 10))
    for dst in (0, 1):
        seen.append(await store.get_receipts(dst, 0, 10))
    for i in range(6):
        seen.append(await store.get_tx(bytes([i]) * 32))
        seen.append(await store.get_block_by_hash(bytes([i]) * 32))
    seen.append(await store.state_page(b"", 3))
    for address in (b"A" * 32, b"B" * 32, b"C" * 32):
        for before, limit in ((2**63 - 1, 1000), (2**63 - 1, 2), ((3 << 20) | 2, 3), (0, 5)):
            seen.append(await store.get_account_txs(address, before, limit))
    await store.close()
    return seen


@settings(max_examples=40)
@given(st.lists(commits(), max_size=8))
def test_memory_store_matches_sqlite_store(batch: list[BlockCommit]) -> None:
    limits = StoreLimits(range_blocks_max=4, range_receipts_max=3)
    with tempfile.TemporaryDirectory() as tmp:

        async def both() -> tuple[list[object], list[object]]:
            sqlite = await Store.open(Path(tmp) / "s.db", limits=limits)
            return await run(sqlite, batch), await run(MemoryStore(limits), batch)

        real, memory = asyncio.run(both())
    assert memory == real
