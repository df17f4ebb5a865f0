"""The writer process of the crash test, and the checker that reads what it left.

``python -m tests.support.store_crash_writer DB SEED`` opens (or creates) the store,
rebuilds and checks its state, prints ``ready H``, then loops: build a block of
signed transfers on shard 0 of a 2-shard genesis (about half of them
cross-shard, so receipts are written too), persist a vote for it alone
(``put_metadata``, as the replica does before sending), print ``begin H``, commit
it through ``Store``, print ``done H US`` (US: the commit's duration in microseconds). It
stops by itself after ``HEIGHTS_MAX`` blocks or ``RUN_S_MAX`` seconds; the test
kills it long before. ``--check-only`` prints ``ready H`` and exits.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from consensus.kernel.codec import decode
from consensus.kernel.crypto import KeyPair
from node.ledger_store import compute_block_commit, open_state, restore_state
from node.store import Store
from sharding.accounts import derive_account, shard_of
from sharding.block import GENESIS_PREV_HASH, block_hash, decode_block
from sharding.executor import build_block, commit_block_result
from sharding.genesis import Genesis, load_genesis, make_genesis_dict
from sharding.receipts import Receipt, compute_receipts_root
from sharding.records import get_nonce, get_out_seq
from sharding.tx import Transfer, TxBody, sign_tx, tx_hash

SHARD = 0
NUM_SHARDS = 2
ACCOUNTS = 64
TXS_PER_BLOCK = 60
HEIGHTS_MAX = 2_000
RUN_S_MAX = 120.0
TX_CHECK_BLOCKS = 3
RECEIPT_BYTES_MAX = 4096


def make_test_genesis() -> Genesis:
    return load_genesis(
        make_genesis_dict(num_shards=NUM_SHARDS, accounts=ACCOUNTS, validators_per_shard=1)
    )


def certificate_for(height: int, digest: bytes) -> bytes:
    """A stand-in commit certificate: the store treats it as opaque bytes."""
    return b"cert:" + height.to_bytes(8, "big") + digest


def metadata_for(height: int) -> dict[str, bytes]:
    return {"view": (height // 7).to_bytes(8, "big"), "last_committed": height.to_bytes(8, "big")}


async def run_writer(db: Path, seed: int, check_only: bool) -> None:
    genesis = make_test_genesis()
    keys = [derive_account("load", i) for i in range(ACCOUNTS)]
    local: list[KeyPair] = [k for k in keys if shard_of(k.public_key, NUM_SHARDS) == SHARD]
    store = await Store.open(db)
    try:
        state, latest = await open_state(store, genesis, SHARD)
        height = 0 if latest is None else latest.header.height
        prev = GENESIS_PREV_HASH if latest is None else block_hash(latest.header)
        _say("ready", height)
        if check_only:
            return
        rng = random.Random(seed)
        started = time.monotonic()
        while height < HEIGHTS_MAX and time.monotonic() - started < RUN_S_MAX:
            height += 1
            nonces: dict[bytes, int] = {}
            txs = []
            for _ in range(TXS_PER_BLOCK):
                sender = rng.choice(local)
                address = sender.public_key
                nonce = nonces.get(address, get_nonce(state, address))
                nonces[address] = nonce + 1
                to = rng.choice(keys).public_key
                body = TxBody(genesis.chain_id, address, nonce, Transfer(to, 0, rng.randint(1, 9)))
                txs.append(sign_tx(sender, body))
            block, result, rejected = build_block(
                state,
                txs,
                [],
                height=height,
                view=height // 7,
                prev_hash=prev,
                time_ms=height,
                proposer=0,
            )
            if rejected:
                raise RuntimeError(f"writer built invalid txs: {rejected[0].reason}")
            digest = block_hash(block.header)
            # As the replica does: persist its vote before "sending" it, then commit.
            await store.put_metadata({"voted": height.to_bytes(8, "big")})
            commit = compute_block_commit(
                block, result, certificate_for(height, digest), metadata_for(height)
            )
            _say("begin", height)
            commit_started = time.perf_counter()
            await store.commit_block(commit)
            _say("done", height, round((time.perf_counter() - commit_started) * 1e6))
            commit_block_result(state, result)
            prev = digest
    finally:
        await store.close()


def _say(word: str, height: int, commit_us: int | None = None) -> None:
    sys.stdout.write(
        f"{word} {height}\n" if commit_us is None else f"{word} {height} {commit_us}\n"
    )
    sys.stdout.flush()


async def verify_store(db: Path) -> int:
    """Check everything the crash test promises about a reopened store; return its height."""
    store = await Store.open(db)
    try:
        assert await store.integrity_check() == "ok"
        snapshot = await store.load_snapshot()
        state, latest = restore_state(snapshot)  # raises unless the roots agree
        top = 0 if latest is None else latest.header.height
        assert snapshot.metadata.get("last_committed", bytes(8)) == top.to_bytes(8, "big")
        # Verify the vote persisted before a commit is never lost: it is for top or top + 1.
        voted = int.from_bytes(snapshot.metadata.get("voted", bytes(8)), "big")
        assert voted in (top, top + 1), f"voted {voted}, top {top}"
        # Verify every block below the top is there, hash-linked, with its certificate.
        prev = GENESIS_PREV_HASH
        receipts_seen = 0
        height = 1
        while height <= top:
            stored_blocks = await store.get_blocks(height, top)
            assert stored_blocks, f"block {height} missing below {top}"
            for stored in stored_blocks:
                block = decode_block(stored.block)
                header = block.header
                assert header.height == stored.height == height
                assert block_hash(header) == stored.block_hash
                assert header.prev_hash == prev, f"block {height} does not link"
                assert stored.certificate == certificate_for(height, stored.block_hash)
                # Verify the block's receipts are stored and match its receipts root.
                records = [
                    r
                    for r in await store.get_receipts(1, receipts_seen + 1, 10**18)
                    if r.height == height
                ]
                assert [r.seq for r in records] == list(
                    range(receipts_seen + 1, receipts_seen + 1 + len(records))
                )
                receipts = [decode(r.receipt, Receipt, RECEIPT_BYTES_MAX) for r in records]
                assert compute_receipts_root(receipts) == header.receipts_root
                receipts_seen += len(records)
                if height > top - TX_CHECK_BLOCKS:
                    for position, tx in enumerate(block.txs):
                        record = await store.get_tx(tx_hash(tx))
                        assert record is not None, f"tx {position} of block {height} not indexed"
                        assert (record.height, record.position) == (height, position)
                prev = stored.block_hash
                height += 1
        # Verify no receipt beyond the state's out_seq was stored (nothing half-written).
        assert receipts_seen == get_out_seq(state, 1)
        assert await store.get_receipts(1, receipts_seen + 1, 10**18) == []
        assert await store.get_block(top + 1) is None
        return top
    finally:
        await store.close()


def main() -> None:
    db, seed = Path(sys.argv[1]), int(sys.argv[2])
    asyncio.run(run_writer(db, seed, "--check-only" in sys.argv[3:]))


if __name__ == "__main__":
    main()
