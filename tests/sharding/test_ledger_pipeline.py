"""Pipelining in the ledger (issue 16, deliverable 1, part B): executing and proposing
a block on an uncommitted parent this ledger executed ok (``parent``), over the
committed state plus the parent's write set.

What must hold: a block executed on a speculative parent gives byte-identical results
(roots, writes, outcomes) to executing it after committing the parent; its state root
is the one it has once the parent commits; a parent that loses its height takes its
children with it; and a pipelined chain (each block proposed on the one in flight,
commits one behind) equals the sequential one, block for block (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.kernel.errors import ShardnetError
from sharding.ledger import Ledger, Proposal
from sharding.parallel import InlineRunner, ParallelExecutor
from sharding.records import get_nonce
from sharding.state import SpeculativeState, State
from sharding.tx import SignedTx, Swap, Transfer
from tests.support.ledger import get_genesis, get_keys, get_pool_on, make_tx

SHARD = 0
T0 = 1_000_000


def ledger(parallel: bool = False) -> Ledger:
    executor = (ParallelExecutor(InlineRunner(2), parallel_txs_min=0, parallel_unsigned=True)
                if parallel else None)
    return Ledger(get_genesis(), SHARD, executor=executor)


def txs_of(specs: list[tuple[int, int, int]], nonces: dict[int, int]) -> list[SignedTx]:
    """(sender, kind, amount) -> signed transactions with each sender's next nonce:
    kind 0 a local transfer, 1 a cross-shard transfer (a receipt), 2 a swap."""
    local, far = get_keys(SHARD), get_keys(1)
    out = []
    for sender, kind, amount in specs:
        key = local[sender % len(local)]
        nonce = nonces.get(sender % len(local), 0)
        nonces[sender % len(local)] = nonce + 1
        if kind == 0:
            call: Transfer | Swap = Transfer(local[(sender + 1) % len(local)].public_key, 0,
                                             amount)
        elif kind == 1:
            call = Transfer(far[sender % len(far)].public_key, 0, amount)
        else:
            call = Swap(get_pool_on(SHARD).address, 0, amount, 1)
        out.append(make_tx(key, nonce, call))
    return out


def propose(at: Ledger, txs: list[SignedTx], height: int, parent: bytes = b"") -> Proposal:
    return at.propose(txs, [], height=height, view=0, time_ms=T0 + height, proposer=0,
                      txs_max=100, parent=parent)


def test_a_child_on_a_speculative_parent_equals_the_child_after_the_parent_commits() -> None:
    nonces: dict[int, int] = {}
    first = txs_of([(0, 0, 5), (1, 1, 7), (2, 2, 100)], nonces)
    second = txs_of([(0, 0, 3), (1, 2, 50), (3, 1, 9)], nonces)
    primary = ledger()
    p1 = propose(primary, first, 1)
    p2 = propose(primary, second, 2, parent=p1.block_hash)  # on the block in flight
    assert p2.block.header.prev_hash == p1.block_hash
    assert len(p2.block.txs) == 3  # nonces 1.. of the senders of block 1: all valid

    pipelined = ledger()
    assert pipelined.execute(p1.payload, p1.block_hash, 1, 0) == ""
    assert pipelined.execute(p2.payload, p2.block_hash, 2, 0, parent=p1.block_hash) == ""
    sequential = ledger()
    assert sequential.execute(p1.payload, p1.block_hash, 1, 0) == ""
    sequential.commit(p1.payload, p1.block_hash, 1)
    assert sequential.execute(p2.payload, p2.block_hash, 2, 0) == ""

    a = pipelined._speculative[(p2.block_hash, p1.block_hash)].result
    b = sequential._speculative[(p2.block_hash, p1.block_hash)].result
    assert (a.state_root, a.receipts_root, a.tx_root, a.writes, a.outcomes, a.receipts) == (
        b.state_root, b.receipts_root, b.tx_root, b.writes, b.outcomes, b.receipts)
    for at in (pipelined, sequential, primary):
        if at.height == 0:
            at.commit(p1.payload, p1.block_hash, 1)
        at.commit(p2.payload, p2.block_hash, 2)
    assert pipelined.state.root == sequential.state.root == primary.state.root
    assert pipelined.state.root == p2.block.header.state_root
    assert list(pipelined.state.items()) == list(sequential.state.items())


def test_the_parallel_executor_gives_the_same_child_on_a_speculative_parent() -> None:
    nonces: dict[int, int] = {}
    first = txs_of([(s, s % 3, 10 + s) for s in range(8)], nonces)
    second = txs_of([(s, (s + 1) % 3, 20 + s) for s in range(8)], nonces)
    spec, parallel = ledger(), ledger(parallel=True)
    p1, q1 = propose(spec, first, 1), propose(parallel, first, 1)
    p2 = propose(spec, second, 2, parent=p1.block_hash)
    q2 = propose(parallel, second, 2, parent=q1.block_hash)
    assert (p1.payload, p2.payload) == (q1.payload, q2.payload)
    other = ledger(parallel=True)
    assert other.execute(p1.payload, p1.block_hash, 1, 0) == ""
    assert other.execute(p2.payload, p2.block_hash, 2, 0, parent=p1.block_hash) == ""


def test_the_proposal_on_a_parent_checks_nonces_and_funds_on_the_speculative_state() -> None:
    nonces: dict[int, int] = {}
    first = txs_of([(0, 0, 5)], nonces)
    primary = ledger()
    p1 = propose(primary, first, 1)
    # The in-flight block's transaction again: its nonce is used on the parent.
    again = propose(primary, first, 2, parent=p1.block_hash)
    assert list(again.block.txs) == [] and len(again.rejected) == 1
    sender = get_keys(SHARD)[0].public_key
    assert primary.nonce_on(p1.block_hash, sender) == 1
    assert primary.nonce_on(b"", sender) == 0
    state = primary.state_on(p1.block_hash)
    assert state is not None and get_nonce(state, sender) == 1


def test_a_child_of_a_parent_that_lost_its_height_is_refused_then_re_executed() -> None:
    nonces: dict[int, int] = {}
    a_txs = txs_of([(0, 0, 5)], nonces)
    b_txs = txs_of([(1, 0, 6)], {})
    child_txs = txs_of([(0, 0, 1)], nonces)
    maker = ledger()
    a = propose(maker, a_txs, 1)
    child = propose(maker, child_txs, 2, parent=a.block_hash)
    b = propose(ledger(), b_txs, 1)  # another block at height 1 (a view change's)

    replica = ledger()
    assert replica.execute(a.payload, a.block_hash, 1, 0) == ""
    assert replica.execute(b.payload, b.block_hash, 1, 0) == ""
    assert replica.execute(child.payload, child.block_hash, 2, 0, parent=a.block_hash) == ""
    # An unknown parent (never executed here) is refused, not guessed.
    assert replica.execute(child.payload, child.block_hash, 2, 0,
                           parent=b"\x07" * 32).startswith("unknown_parent")
    replica.commit(b.payload, b.block_hash, 1)  # b wins height 1: a and its child are gone
    assert replica._speculative == {}
    assert replica.execute(child.payload, child.block_hash, 2, 0,
                           parent=a.block_hash).startswith("unknown_parent")
    assert replica.execute(child.payload, child.block_hash, 2, 0) == "wrong_prev_hash"
    # Proposing on the lost parent is refused too.
    try:
        propose(replica, child_txs, 2, parent=a.block_hash)
    except ShardnetError as exc:
        assert "unknown parent" in exc.detail
    else:
        raise AssertionError("proposal on a lost parent accepted")


def test_a_result_on_a_parent_is_reused_only_once_that_parent_is_the_tip() -> None:
    nonces: dict[int, int] = {}
    primary = ledger()
    p1 = propose(primary, txs_of([(0, 1, 5)], nonces), 1)
    p2 = propose(primary, txs_of([(0, 1, 6)], nonces), 2, parent=p1.block_hash)
    replica = ledger()
    assert replica.execute(p1.payload, p1.block_hash, 1, 0) == ""
    assert replica.execute(p2.payload, p2.block_hash, 2, 0, parent=p1.block_hash) == ""
    replica.commit(p1.payload, p1.block_hash, 1)
    # The parent is now the tip: asked on the tip, the child's result is found, not redone.
    assert (p2.block_hash, p1.block_hash) in replica._speculative
    assert replica.execute(p2.payload, p2.block_hash, 2, 0) == ""
    executed = replica._speculative[(p2.block_hash, p1.block_hash)].result
    committed = replica.commit(p2.payload, p2.block_hash, 2)
    assert committed.result is executed  # its prepared root applied as it was
    assert replica.state.root == p2.block.header.state_root


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=3), st.none() | st.binary(max_size=4),
                       max_size=12),
       st.dictionaries(st.binary(min_size=1, max_size=3), st.none() | st.binary(max_size=4),
                       max_size=12))
def test_a_speculative_prepare_applies_after_its_parent_like_a_fresh_one(
        parent: dict[bytes, bytes | None], child: dict[bytes, bytes | None]) -> None:
    """The child's writes prepared over committed + the parent's writes, applied once the
    parent's are: the same state and root as applying both in turn; refused before."""
    base = State.from_items([(b"a", b"1"), (b"b", b"2"), (b"\x00", b"3")])
    prepared = SpeculativeState(base, parent, 1).prepare(child)
    sequential = State.from_items(base.items())
    sequential.apply_writes(parent)
    sequential.apply_writes(child)
    try:
        base.apply_prepared(prepared)
    except ShardnetError:
        pass
    else:
        raise AssertionError("a speculative prepare applied before its parent")
    base.apply_writes(parent)
    base.apply_prepared(prepared)
    assert base.root == sequential.root == prepared.root
    assert list(base.items()) == list(sequential.items())


specs = st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2), st.integers(1, 2_000)),
                 min_size=0, max_size=6)


@settings(max_examples=40, deadline=None)
@given(st.lists(specs, min_size=1, max_size=5))
def test_pipelined_equals_sequential(blocks: list[list[tuple[int, int, int]]]) -> None:
    """Random blocks of transfers, cross-shard transfers and swaps: proposed each on
    the one in flight and committed one behind, the chain equals proposing and
    committing each in turn: same block hashes, same roots at every height."""
    nonces: dict[int, int] = {}
    batches = [txs_of(block, nonces) for block in blocks]
    sequential, pipelined, follower = ledger(), ledger(), ledger()
    seq_hashes, seq_roots = [], []
    for height, txs in enumerate(batches, 1):
        p = propose(sequential, txs, height)
        sequential.commit(p.payload, p.block_hash, height)
        seq_hashes.append(p.block_hash)
        seq_roots.append(sequential.state.root)
    parent = b""
    in_flight: list[Proposal] = []
    for height, txs in enumerate(batches, 1):
        p = propose(pipelined, txs, height, parent=parent)
        assert follower.execute(p.payload, p.block_hash, height, 0, parent=parent) == ""
        in_flight.append(p)
        parent = p.block_hash
        if len(in_flight) == 2:  # depth 2: commit the lower one
            done = in_flight.pop(0)
            for at in (pipelined, follower):
                at.commit(done.payload, done.block_hash, done.block.header.height)
            assert pipelined.state.root == seq_roots[done.block.header.height - 1]
    for done in in_flight:
        for at in (pipelined, follower):
            at.commit(done.payload, done.block_hash, done.block.header.height)
    assert pipelined.tip_hash == follower.tip_hash == seq_hashes[-1]
    assert pipelined.state.root == follower.state.root == seq_roots[-1]
