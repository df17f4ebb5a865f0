"""Ledger blocks through the store: what is written, and the start-up root check."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.kernel.codec import decode
from consensus.kernel.crypto import sha256
from node.ledger_store import (
    StateRootMismatch,
    compute_block_commit,
    compute_genesis_hash,
    open_state,
)
from node.store import GenesisMismatch, Store
from node.store.memory import MemoryStore
from sharding.block import block_hash, decode_block
from sharding.executor import TxOutcome, commit_block_result
from sharding.genesis import genesis_state
from sharding.receipts import Receipt
from sharding.tx import Swap, Transfer, tx_hash
from tests.support.ledger import get_genesis, get_keys, get_pool_on, make_tx, propose


async def test_committed_ledger_block_reopens_with_its_state(tmp_path: Path) -> None:
    genesis = get_genesis()
    store = await Store.open(tmp_path / "node.db")
    state, latest = await open_state(store, genesis, 0)
    assert latest is None and state.root == genesis_state(genesis, 0).root
    local, remote = get_keys(0), get_keys(1)
    pool = get_pool_on(0)
    txs = [
        make_tx(local[0], 0, Transfer(local[1].public_key, 0, 10)),
        make_tx(local[0], 1, Transfer(remote[0].public_key, 1, 7)),  # cross-shard
        make_tx(local[2], 0, Swap(pool.address, pool.asset_a, 1_000, 10**18)),  # fails: slippage
    ]
    block, result, rejected = propose(state, txs)
    assert not rejected
    await store.commit_block(compute_block_commit(block, result, b"cert", {"view": b"\x00"}))
    commit_block_result(state, result)
    await store.close()

    store = await Store.open(tmp_path / "node.db")
    reopened, latest = await open_state(store, genesis, 0)
    assert latest == block
    assert reopened.root == state.root == block.header.state_root
    assert list(reopened.items()) == list(state.items())
    stored = await store.get_block_by_hash(block_hash(block.header))
    assert stored is not None and decode_block(stored.block) == block
    record = await store.get_tx(tx_hash(txs[2]))
    assert record is not None and (record.height, record.position) == (1, 2)
    outcome = decode(record.outcome, TxOutcome, 1024)
    assert (outcome.ok, outcome.error) == (False, "slippage")
    (receipt,) = await store.get_receipts(1, 1, 1)
    assert decode(receipt.receipt, Receipt, 1024).amount == 7
    await store.close()


async def test_open_state_refuses_state_items_that_do_not_hash_to_the_header(
    tmp_path: Path,
) -> None:
    genesis = get_genesis()
    store = await Store.open(tmp_path / "node.db")
    state, _ = await open_state(store, genesis, 0)
    local = get_keys(0)
    block, result, _ = propose(state, [make_tx(local[0], 0, Transfer(local[1].public_key, 0, 5))])
    commit = compute_block_commit(block, result, b"cert")
    tampered = [(k, v + b"\x00") if v is not None else (k, v) for k, v in commit.state_writes]
    await store.commit_block(
        type(commit)(
            **{**{f: getattr(commit, f) for f in commit.__slots__}, "state_writes": tampered}
        )
    )
    with pytest.raises(StateRootMismatch):
        await open_state(store, genesis, 0)
    await store.close()


async def test_open_state_refuses_a_store_of_another_genesis() -> None:
    store = MemoryStore()
    await open_state(store, get_genesis(2), 0)
    with pytest.raises(GenesisMismatch):
        await open_state(store, get_genesis(3), 0)
    assert compute_genesis_hash(get_genesis(2)) != compute_genesis_hash(get_genesis(3))
    assert compute_genesis_hash(get_genesis(2)) != sha256(b"")
