"""Between the ledger and the store: what a committed block becomes on disk, and
how a reopened store becomes a checked in-memory state again.

``node.store`` speaks bytes; this is the one place that knows which ledger
objects those bytes are. The node, the crash test's writer and the ledger
benchmark all go through here, so they store exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping

from consensus.kernel.codec import encode
from consensus.kernel.crypto import sha256
from node.store import (
    AccountTxRecord,
    BlockCommit,
    InboundRecord,
    ReceiptRecord,
    Snapshot,
    StoreAPI,
    StoreError,
    TxRecord,
)
from sharding.block import Block, BlockHeader, block_hash, decode_block, encode_block
from sharding.executor import BlockResult
from sharding.genesis import Genesis, genesis_state, genesis_to_json
from sharding.state import State
from sharding.tx import get_call_addresses


class StateRootMismatch(StoreError):
    """The stored state items do not hash to the stored header's state root."""

    reason = "state_root_mismatch"


def compute_genesis_hash(genesis: Genesis) -> bytes:
    """Identifies the testnet a store belongs to (over the canonical genesis JSON)."""
    return sha256(genesis_to_json(genesis))


def compute_block_commit(
    block: Block,
    result: BlockResult,
    certificate: bytes,
    metadata: Mapping[str, bytes] | None = None,
) -> BlockCommit:
    """Everything committing ``block`` (executed into ``result``) writes, as bytes."""
    height = block.header.height
    return BlockCommit(
        height=height,
        block_hash=block_hash(block.header),
        block=encode_block(block),
        certificate=certificate,
        state_writes=list(result.writes.items()),
        receipts=[ReceiptRecord(r.dst_shard, r.seq, encode(r), origin=r.origin)
                  for r in result.receipts],
        inbound=[InboundRecord(r.src_shard, r.seq, r.origin) for r in block.inbound],
        txs=[
            TxRecord(outcome.tx_hash, height, position, encode(outcome))
            for position, outcome in enumerate(result.outcomes)
        ],
        account_txs=account_entries(block, result),
        metadata=dict(metadata or {}),
    )


def account_entries(block: Block, result: BlockResult) -> list[AccountTxRecord]:
    """The ``account_txs`` index rows of a block (node/store/accounts.py): the account
    credited by each inbound receipt ("credit", keyed by its origin transaction), then
    each transaction's sender and the addresses its call names ("recipient")."""
    height = block.header.height
    entries = [AccountTxRecord(r.recipient, height, i, r.origin, "credit")
               for i, r in enumerate(block.inbound)]
    first = len(block.inbound)
    for position, (tx, outcome) in enumerate(zip(block.txs, result.outcomes, strict=True)):
        seen = {tx.body.sender}
        entries.append(AccountTxRecord(tx.body.sender, height, first + position,
                                       outcome.tx_hash, "sender"))
        for address in get_call_addresses(tx.body.call):
            if address not in seen:
                seen.add(address)
                entries.append(AccountTxRecord(address, height, first + position,
                                               outcome.tx_hash, "recipient"))
    return entries


async def open_state(store: StoreAPI, genesis: Genesis, shard: int) -> tuple[State, Block | None]:
    """Initialise an empty store from genesis, or rebuild the state a store holds.

    Returns the state and the last committed block (None at genesis). The rebuilt
    root must equal the last header's state root (or the genesis root): a store
    that fails this is not trusted, whatever SQLite says about the file.
    """
    state = genesis_state(genesis, shard)
    if await store.initialize(compute_genesis_hash(genesis), list(state.items())):
        return state, None
    snapshot = await store.load_snapshot()
    return restore_state(snapshot, expected_genesis_root=state.root)


def restore_state(
    snapshot: Snapshot, *, expected_genesis_root: bytes | None = None
) -> tuple[State, Block | None]:
    state = State.from_items(snapshot.state_items)
    if snapshot.latest is None:
        header: BlockHeader | None = None
        expected = expected_genesis_root
        latest = None
    else:
        latest = decode_block(snapshot.latest.block)
        header = latest.header
        expected = header.state_root
        if block_hash(header) != snapshot.latest.block_hash:
            raise StateRootMismatch(f"stored block {header.height} does not hash to its key")
    if expected is not None and state.root != expected:
        where = "genesis" if header is None else f"block {header.height}"
        raise StateRootMismatch(
            f"state items hash to {state.root.hex()[:16]}, {where} says {expected.hex()[:16]}"
        )
    return state, latest
