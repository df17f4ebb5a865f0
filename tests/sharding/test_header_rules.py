"""Header fields execution does not decide (issue 14 finding 8): ``proposer`` must be the
primary of the header's view and ``time_ms`` must increase, on every path a block takes
into a ledger (vote, commit, sync, replay); the wall clock bounds only fresh proposals
(docs/PROTOCOL.md section 3, "Header rules")."""

from __future__ import annotations

from functools import lru_cache

import pytest

from consensus.kernel.codec import encode
from consensus.kernel.errors import InvariantViolation, ShardnetError
from sharding.accounts import derive_account
from sharding.block import Block, block_hash
from sharding.executor import build_block
from sharding.genesis import Genesis, load_genesis, make_genesis_dict
from sharding.header_rules import next_time_ms
from sharding.ledger import Ledger
from sharding.tx import SignedTx, Transfer
from tests.support.ledger import make_tx

VALIDATORS = 4
GENESIS_TIME_MS = 1_700_000_000_000


@lru_cache(maxsize=1)
def genesis() -> Genesis:
    spec = make_genesis_dict(num_shards=1, validators_per_shard=VALIDATORS, accounts=4)
    spec["genesis_time_ms"] = GENESIS_TIME_MS
    return load_genesis(spec)


def transfer(nonce: int) -> SignedTx:
    key = derive_account("load", 0)
    return make_tx(key, nonce, Transfer(derive_account("load", 1).public_key, 0, 1))


def block_on(ledger: Ledger, *, view: int, proposer: int, time_ms: int) -> Block:
    """The next block on ``ledger``'s tip with the header fields given (the executor's
    builder, which leaves proposer and time to its caller)."""
    block, _, rejected = build_block(
        ledger.state, [transfer(ledger.height)], [], height=ledger.height + 1, view=view,
        prev_hash=ledger.tip_hash, time_ms=time_ms, proposer=proposer)
    assert rejected == []
    return block


def execute(ledger: Ledger, block: Block, view: int | None = None, *,
            now_ms: int | None = None, time_ahead_max_ms: int = 0) -> str:
    slot_view = block.header.view if view is None else view
    return ledger.execute(encode(block), block_hash(block), block.header.height, slot_view,
                          now_ms=now_ms, time_ahead_max_ms=time_ahead_max_ms)


def commit(ledger: Ledger, block: Block) -> None:
    ledger.commit(encode(block), block_hash(block), block.header.height)


def test_block_with_wrong_proposer_is_invalid() -> None:
    """Proposer 65535 (no validator: no honest node would announce the block) or the
    index of another validator than the view's primary: refused before the vote, and a
    certified copy halts a replaying ledger rather than being applied."""
    ledger = Ledger(genesis(), 0)
    t = GENESIS_TIME_MS + 1
    for view, proposer in ((0, 65535), (0, 1), (1, 0), (5, 2)):
        reason = execute(ledger, block_on(ledger, view=view, proposer=proposer, time_ms=t))
        assert reason.startswith("wrong_proposer: "), (view, proposer, reason)
    # The same fields with the right proposer are valid: view mod n.
    for view, proposer in ((0, 0), (1, 1), (5, 1)):
        assert execute(ledger, block_on(ledger, view=view, proposer=proposer, time_ms=t)) == ""
    # A block re-proposed in a later view keeps its header: the view it records decides.
    kept = block_on(ledger, view=1, proposer=1, time_ms=t)
    assert execute(ledger, kept, view=3) == ""
    # Replaying (commit without an execute before) checks it too.
    replayer = Ledger(genesis(), 0)
    with pytest.raises(ShardnetError) as info:
        commit(replayer, block_on(replayer, view=0, proposer=65535, time_ms=t))
    assert info.value.reason == "divergence"
    assert replayer.height == 0
    # An honest primary never builds one.
    with pytest.raises(InvariantViolation):
        ledger.propose([transfer(0)], [], height=1, view=1, time_ms=t, proposer=0, txs_max=10)


def test_block_with_time_not_increasing_is_invalid() -> None:
    """Height 1 must be after the genesis time; each next block after its parent's."""
    ledger = Ledger(genesis(), 0)
    for time_ms in (0, GENESIS_TIME_MS - 1, GENESIS_TIME_MS):
        reason = execute(ledger, block_on(ledger, view=0, proposer=0, time_ms=time_ms))
        assert reason.startswith("time_not_increasing: "), (time_ms, reason)
    first = block_on(ledger, view=0, proposer=0, time_ms=GENESIS_TIME_MS + 5_000)
    assert execute(ledger, first) == ""
    commit(ledger, first)
    assert ledger.tip_time_ms == GENESIS_TIME_MS + 5_000
    for time_ms in (GENESIS_TIME_MS, GENESIS_TIME_MS + 4_999, GENESIS_TIME_MS + 5_000):
        reason = execute(ledger, block_on(ledger, view=0, proposer=0, time_ms=time_ms))
        assert reason.startswith("time_not_increasing: "), (time_ms, reason)
    assert execute(ledger, block_on(ledger, view=0, proposer=0,
                                    time_ms=GENESIS_TIME_MS + 5_001)) == ""
    # Replaying checks it too.
    replayer = Ledger(genesis(), 0)
    with pytest.raises(ShardnetError) as info:
        commit(replayer, block_on(replayer, view=0, proposer=0, time_ms=GENESIS_TIME_MS))
    assert info.value.reason == "divergence"


def test_primary_keeps_time_increasing_when_its_clock_steps_back() -> None:
    """A primary whose clock reads before its tip's time proposes tip + 1 ms, and the
    block is valid on a replica."""
    primary, replica = Ledger(genesis(), 0), Ledger(genesis(), 0)
    now = GENESIS_TIME_MS + 60_000
    first = primary.propose([transfer(0)], [], height=1, view=0, time_ms=now, proposer=0,
                            txs_max=10)
    assert first.block.header.time_ms == now
    for ledger in (primary, replica):
        commit(ledger, first.block)
    stepped_back = primary.propose([transfer(1)], [], height=2, view=0, time_ms=now - 30_000,
                                   proposer=0, txs_max=10)
    assert stepped_back.block.header.time_ms == now + 1 == next_time_ms(now, now - 30_000)
    assert execute(replica, stepped_back.block) == ""
    # Clock readings in the past before genesis give genesis + 1.
    assert Ledger(genesis(), 0).propose([transfer(0)], [], height=1, view=0, time_ms=0,
                                        proposer=0, txs_max=10).block.header.time_ms == \
        GENESIS_TIME_MS + 1


def test_proposal_far_ahead_of_the_given_clock_is_refused() -> None:
    """With the replica's clock given (a fresh proposal), a time more than the allowed
    drift ahead is refused; at the bound it passes."""
    ledger = Ledger(genesis(), 0)
    now = GENESIS_TIME_MS + 1_000
    ahead = block_on(ledger, view=0, proposer=0, time_ms=now + 15_001)
    reason = execute(ledger, ahead, now_ms=now, time_ahead_max_ms=15_000)
    assert reason.startswith("time_in_future: ")
    at_bound = block_on(ledger, view=0, proposer=0, time_ms=now + 15_000)
    assert execute(ledger, at_bound, now_ms=now, time_ahead_max_ms=15_000) == ""


def test_replaying_committed_blocks_ignores_the_wall_clock() -> None:
    """Blocks committed with times far past any clock now read (a chain from a node
    whose clock ran ahead, or replayed years earlier in a test) validate and apply on
    a fresh ledger: execute without a clock, or commit directly, gives the same state.
    The verdict on them depends only on the blocks."""
    source = Ledger(genesis(), 0)
    chain = []
    for i in range(3):
        block = block_on(source, view=0, proposer=0, time_ms=GENESIS_TIME_MS + 10**9 * (i + 1))
        commit(source, block)
        chain.append(block)
    executing, committing = Ledger(genesis(), 0), Ledger(genesis(), 0)
    for block in chain:
        # The same block as a fresh proposal would be refused by this clock...
        assert execute(executing, block, now_ms=GENESIS_TIME_MS,
                       time_ahead_max_ms=15_000).startswith("time_in_future")
        # ...but replayed (no clock: the node's driver passes none for certified blocks)
        # it is valid, and so is committing it outright.
        assert execute(executing, block) == ""
        commit(executing, block)
        commit(committing, block)
    assert executing.state.root == committing.state.root == source.state.root
    assert executing.tip_time_ms == committing.tip_time_ms == chain[-1].header.time_ms


def test_a_ledger_reopened_above_genesis_keeps_its_tip_time() -> None:
    """Reopened from a store at height h, the ledger needs block h's time (the node
    passes the last stored header's): the next block must still be after it."""
    source = Ledger(genesis(), 0)
    first = block_on(source, view=0, proposer=0, time_ms=GENESIS_TIME_MS + 7)
    commit(source, first)
    with pytest.raises(InvariantViolation):
        Ledger(genesis(), 0, source.state, 1, block_hash(first))
    reopened = Ledger(genesis(), 0, source.state, 1, block_hash(first),
                      tip_time_ms=first.header.time_ms)
    stale = block_on(reopened, view=0, proposer=0, time_ms=GENESIS_TIME_MS + 7)
    assert execute(reopened, stale).startswith("time_not_increasing")
