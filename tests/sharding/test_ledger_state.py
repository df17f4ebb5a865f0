"""Shard state, overlays and the incremental state root (PROTOCOL.md section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel.errors import InvariantViolation
from sharding.merkle import compute_leaf_hash, compute_root_of_leaf_hashes
from sharding.state import (
    BUCKETS,
    EMPTY_BUCKET_HASH,
    EMPTY_STATE_ROOT,
    Overlay,
    State,
    compute_bucket_hash,
    compute_bucket_index,
    compute_entry_hash,
)

keys = st.binary(min_size=1, max_size=6)
values = st.binary(max_size=8)
write_sets = st.dictionaries(keys, st.none() | values, max_size=30)


def reference_root(items: dict[bytes, bytes]) -> bytes:
    """The root from its definition: RFC 6962 over all 2**16 bucket hashes."""
    buckets: dict[int, dict[bytes, bytes]] = {}
    for key, value in items.items():
        buckets.setdefault(compute_bucket_index(key), {})[key] = compute_entry_hash(key, value)
    leaf_hashes = [
        compute_bucket_hash(buckets[i]) if i in buckets else EMPTY_BUCKET_HASH
        for i in range(BUCKETS)
    ]
    return compute_root_of_leaf_hashes(leaf_hashes)


def test_empty_state_has_the_fixed_empty_root() -> None:
    assert State().root == EMPTY_STATE_ROOT == State.from_items([]).root
    assert compute_leaf_hash(b"") == EMPTY_BUCKET_HASH


def test_root_matches_its_definition() -> None:
    items = {b"a" + bytes([i]): bytes([i]) * 3 for i in range(50)}
    assert State.from_items(items.items()).root == reference_root(items)
    state = State()
    state.apply_writes(items)
    assert state.root == reference_root(items)


@given(st.lists(write_sets, max_size=6))
def test_incremental_root_equals_root_from_scratch(
    batches: list[dict[bytes, bytes | None]],
) -> None:
    state = State()
    model: dict[bytes, bytes] = {}
    for writes in batches:
        state.apply_writes(writes)
        for key, value in writes.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        assert dict(state.items()) == model
        assert state.root == State.from_items(model.items()).root


def test_root_depends_on_values_and_keys() -> None:
    one = State.from_items([(b"k", b"v")]).root
    assert one != State.from_items([(b"k", b"w")]).root
    assert one != State.from_items([(b"j", b"v")]).root
    # Key/value boundary is length-prefixed: ("ab", "c") and ("a", "bc") differ.
    assert compute_entry_hash(b"ab", b"c") != compute_entry_hash(b"a", b"bc")


def test_deleting_every_key_returns_to_the_empty_root() -> None:
    state = State.from_items([(b"x", b"1"), (b"y", b"2")])
    state.apply_writes({b"x": None, b"y": None})
    assert state.root == EMPTY_STATE_ROOT
    assert len(state) == 0


def test_prepare_does_not_mutate_and_apply_prepared_matches() -> None:
    state = State.from_items([(b"x", b"1")])
    before = state.root
    prepared = state.prepare({b"y": b"2"})
    assert state.root == before and state.get(b"y") is None
    state.apply_prepared(prepared)
    assert state.root == prepared.root == State.from_items([(b"x", b"1"), (b"y", b"2")]).root


def test_rejects_prepared_writes_of_another_state_version() -> None:
    state = State()
    stale = state.prepare({b"y": b"2"})
    state.apply_writes({b"x": b"1"})
    with pytest.raises(InvariantViolation):
        state.apply_prepared(stale)


def test_rejects_duplicate_keys_when_rebuilding() -> None:
    with pytest.raises(InvariantViolation):
        State.from_items([(b"x", b"1"), (b"x", b"2")])


def test_rejects_empty_key() -> None:
    with pytest.raises(InvariantViolation):
        State().apply_writes({b"": b"1"})


def test_overlay_reads_through_and_aborts_by_dropping() -> None:
    state = State.from_items([(b"x", b"1")])
    view = Overlay(state)
    view.set(b"y", b"2")
    view.delete(b"x")
    assert view.get(b"x") is None and view.get(b"y") == b"2"
    assert state.get(b"x") == b"1" and state.get(b"y") is None
    del view
    assert dict(state.items()) == {b"x": b"1"}


def test_nested_overlay_commits_into_its_parent_only() -> None:
    state = State()
    outer = state.overlay()
    inner = outer.overlay()
    inner.set(b"k", b"v")
    inner.commit()
    assert outer.get(b"k") == b"v" and state.get(b"k") is None
    outer.commit()
    assert state.get(b"k") == b"v"
    assert state.root == State.from_items([(b"k", b"v")]).root


def test_items_are_in_key_order() -> None:
    state = State.from_items([(b"b", b"2"), (b"a", b"1"), (b"c", b"3")])
    assert [k for k, _ in state.items()] == [b"a", b"b", b"c"]
