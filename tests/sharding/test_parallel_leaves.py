"""The state root's per-key hashes computed in the workers (issue 16): ``State.prepare``
with leaves from ``compute_leaves`` gives the root, buckets and nodes it computes
alone, for random states and write sets; a leaf whose value is not the one written
is ignored. (Blocks finished with the workers' leaves, tx root included, equal the
spec's: the partitioned runs of tests/sharding/test_parallel_executor.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharding.state import State, compute_leaves

keys = st.binary(min_size=1, max_size=40)
values = st.binary(max_size=60)
items = st.dictionaries(keys, values, max_size=60)
write_sets = st.dictionaries(keys, st.none() | values, max_size=60)


def same_prepared(state: State, writes: dict[bytes, bytes | None],
                  leaves: dict[bytes, tuple[bytes | None, int, bytes]]) -> None:
    alone = state.prepare(writes)
    hinted = state.prepare(writes, leaves)
    assert hinted.root == alone.root
    assert hinted.buckets == alone.buckets
    assert hinted.nodes == alone.nodes
    assert list(hinted.writes.items()) == list(alone.writes.items())


@settings(max_examples=150)
@given(items, write_sets, st.data())
def test_worker_leaves_give_the_sequential_root(
    initial: dict[bytes, bytes], writes: dict[bytes, bytes | None], data: st.DataObject
) -> None:
    state = State.from_items(initial.items())
    computed = compute_leaves(writes)
    # Any subset of the writes may come with leaves (the rest are computed here).
    chosen = data.draw(st.lists(st.sampled_from(computed), unique_by=lambda leaf: leaf[0])
                       if computed else st.just([]))
    leaves = {key: (value, index, entry) for key, value, index, entry in chosen}
    same_prepared(state, writes, leaves)
    state.apply_prepared(state.prepare(writes, leaves))
    assert state.root == State.from_items(state.items()).root


@given(items, write_sets, values)
def test_a_leaf_for_another_value_is_ignored(
    initial: dict[bytes, bytes], writes: dict[bytes, bytes | None], stale: bytes
) -> None:
    """A worker's leaf for a key the calling process wrote again (a re-executed
    transaction, a stamped counter) carries an older value: it must not be used."""
    state = State.from_items(initial.items())
    leaves = {key: (value, index, entry)
              for key, value, index, entry in compute_leaves(
                  {key: stale for key in writes})}
    leaves = {key: leaf for key, leaf in leaves.items() if leaf[0] != writes[key]}
    same_prepared(state, writes, leaves)


def test_partitioned_blocks_finish_with_the_workers_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partitioned path does not recompute the leaves (``finish_block`` is not
    called, and no transaction is encoded for the tx root here) yet returns the
    spec's result."""
    import sharding.parallel.merge as merge
    from sharding.block import GENESIS_PREV_HASH
    from sharding.executor import apply_block, build_block
    from sharding.genesis import genesis_state
    from sharding.parallel import InlineRunner, ParallelExecutor
    from sharding.tx import Transfer
    from tests.support.ledger import get_genesis, get_keys, make_tx

    keys = get_keys(0)
    state = genesis_state(get_genesis(), 0)
    txs = [make_tx(keys[i % 4], i // 4, Transfer(keys[4 + i % 3].public_key, 0, 1 + i))
           for i in range(24)]
    block, spec, _ = build_block(state, txs, [], height=1, view=0, prev_hash=GENESIS_PREV_HASH,
                                 time_ms=1, proposer=0)

    def refuse(*args: object) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr(merge, "finish_block", refuse)
    monkeypatch.setattr(merge, "compute_tx_root", refuse)
    executor = ParallelExecutor(InlineRunner(2), parallel_txs_min=0, overlap_workers_max=0)
    result = executor.apply_block(state, block)
    assert result == spec and result.prepared.root == apply_block(state, block).state_root
    assert list(result.writes.items()) == list(spec.writes.items())
