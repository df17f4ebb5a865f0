"""Shard state: a key-value map (bytes -> bytes) with an incremental state root.

The root (PROTOCOL.md section 3) is a binary Merkle tree over ``2**BUCKET_BITS``
fixed buckets. A key falls in bucket ``H(key)[:2]``; a bucket's hash is the RFC
6962 leaf hash of the concatenation of its entry hashes in key order, where an
entry hash is ``H(TAG_STATE || len(key) || key || value)``; the root is the RFC
6962 root over the bucket hashes (``merkle.compute_root_of_leaf_hashes``).
Writing k keys rehashes at most k buckets and k * BUCKET_BITS inner nodes: the
cost grows with the keys written and (through bucket size) only with
state_size / 65536, never with a full pass over the state. ``State.from_items``
recomputes everything from scratch so storage can check a reopened database.

``Overlay`` is the copy-on-write view used for speculative execution: a replica
executes a proposed block in an overlay, then commits its write set or drops it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from hashlib import sha256 as _sha256
from typing import Protocol

from consensus.kernel.crypto import TAG_MERKLE_LEAF, TAG_MERKLE_NODE, TAG_STATE
from consensus.kernel.errors import check
from sharding.merkle import compute_node_hash

BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS
KEY_BYTES_MAX = 0xFFFF

Writes = Mapping[bytes, bytes | None]


class StateReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...


class StateView(StateReader, Protocol):
    def set(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


# The hashes below are ``tagged_hash``/``compute_leaf_hash``/``compute_node_hash``
# written as one ``hashlib`` call each: they run tens of thousands of times a block.
_TAG_STATE = bytes((TAG_STATE,))
_TAG_LEAF = bytes((TAG_MERKLE_LEAF,))
_TAG_NODE = bytes((TAG_MERKLE_NODE,))


def compute_bucket_index(key: bytes) -> int:
    return int.from_bytes(_sha256(key).digest()[:4], "big") >> (32 - BUCKET_BITS)


def compute_entry_hash(key: bytes, value: bytes) -> bytes:
    """``tagged_hash(TAG_STATE, len(key) as u16, key, value)``."""
    return _sha256(_TAG_STATE + len(key).to_bytes(2, "big") + key + value).digest()


def compute_bucket_hash(entries: Mapping[bytes, bytes]) -> bytes:
    """``entries`` maps key -> entry hash; the RFC 6962 leaf hash of the entry
    hashes concatenated in key order."""
    return _sha256(_TAG_LEAF + b"".join([entries[key] for key in sorted(entries)])).digest()


EMPTY_BUCKET_HASH = compute_bucket_hash({})

Leaf = tuple[bytes | None, int, bytes]  # value, bucket index, entry hash (b"" for a deletion)
Leaves = Mapping[bytes, Leaf]


def compute_leaves(writes: Writes) -> list[tuple[bytes, bytes | None, int, bytes]]:
    """(key, value, bucket index, entry hash) of each write: the per-key part of the
    state root, computable anywhere (``State.prepare(writes, leaves)`` uses it)."""
    return [
        (key, value, compute_bucket_index(key),
         b"" if value is None else compute_entry_hash(key, value))
        for key, value in writes.items()
    ]


def _empty_levels() -> list[list[bytes]]:
    levels = [[EMPTY_BUCKET_HASH] * BUCKETS]
    node = EMPTY_BUCKET_HASH
    for depth in range(1, BUCKET_BITS + 1):
        node = compute_node_hash(node, node)
        levels.append([node] * (BUCKETS >> depth))
    return levels


EMPTY_STATE_ROOT = _empty_levels()[BUCKET_BITS][0]


@dataclass(frozen=True, slots=True)
class PreparedWrites:
    """A write set with its new buckets and tree nodes computed, for one state version."""

    version: int
    writes: dict[bytes, bytes | None]
    buckets: dict[int, dict[bytes, bytes]]
    nodes: list[dict[int, bytes]]  # per level: index -> new hash

    @property
    def root(self) -> bytes:
        return self.nodes[BUCKET_BITS][0]


class State:
    """The committed state of one shard."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._buckets: dict[int, dict[bytes, bytes]] = {}  # index -> key -> entry hash
        self._levels = _empty_levels()
        self._version = 0

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes]]) -> State:
        """Rebuild a state and its root from scratch (one pass over every entry)."""
        state = cls()
        for key, value in items:
            check(key not in state._data, f"duplicate key {key.hex()}")
            state._insert(key, value)
        bucket_hashes = {
            index: compute_bucket_hash(entries) for index, entries in state._buckets.items()
        }
        for depth, level in enumerate(state._compute_nodes(bucket_hashes)):
            target = state._levels[depth]
            for index, node in level.items():
                target[index] = node
        return state

    def _insert(self, key: bytes, value: bytes) -> None:
        check(0 < len(key) <= KEY_BYTES_MAX, "state key length out of range")
        self._data[key] = value
        self._buckets.setdefault(compute_bucket_index(key), {})[key] = compute_entry_hash(
            key, value
        )

    # -- reads

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every entry in key order (deterministic, for audits and snapshots)."""
        for key in sorted(self._data):
            yield key, self._data[key]

    @property
    def root(self) -> bytes:
        return self._levels[BUCKET_BITS][0]

    @property
    def version(self) -> int:
        """Incremented by every applied write set; guards ``PreparedWrites``."""
        return self._version

    def overlay(self) -> Overlay:
        return Overlay(self)

    # -- writes

    def prepare(self, writes: Writes, leaves: Leaves | None = None) -> PreparedWrites:
        """Compute the root after ``writes`` without changing the state.

        ``leaves`` may carry each written key's bucket and entry hash computed
        elsewhere (the parallel executor's workers, ``compute_leaves``); a leaf is
        used only when its value is the one written, so the result is the same
        with or without it."""
        writes = dict(writes)
        hints = {} if leaves is None else leaves
        buckets: dict[int, dict[bytes, bytes]] = {}
        for key, value in writes.items():
            if value is not None:
                check(0 < len(key) <= KEY_BYTES_MAX, "state key length out of range")
            hint = hints.get(key)
            if hint is not None and hint[0] == value:
                index, entry = hint[1], hint[2]
            else:
                index = compute_bucket_index(key)
                entry = b"" if value is None else compute_entry_hash(key, value)
            entries = buckets.get(index)
            if entries is None:
                entries = dict(self._buckets.get(index, {}))
                buckets[index] = entries
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
        nodes = self._compute_nodes(
            {index: compute_bucket_hash(entries) for index, entries in buckets.items()}
        )
        return PreparedWrites(self._version, writes, buckets, nodes)

    def _compute_nodes(self, bucket_hashes: dict[int, bytes]) -> list[dict[int, bytes]]:
        """New hashes per tree level for changed buckets: only their paths to the root."""
        nodes = [bucket_hashes]
        below = bucket_hashes
        for depth in range(1, BUCKET_BITS + 1):
            old = self._levels[depth - 1]
            level: dict[int, bytes] = {}
            for index in below:
                parent = index >> 1
                if parent in level:
                    continue
                left_index = parent << 1
                left = below.get(left_index) or old[left_index]
                right = below.get(left_index | 1) or old[left_index | 1]
                level[parent] = _sha256(_TAG_NODE + left + right).digest()
            nodes.append(level)
            below = level
        if not bucket_hashes:
            nodes[BUCKET_BITS][0] = self.root
        return nodes

    def apply_prepared(self, prepared: PreparedWrites) -> None:
        check(prepared.version == self._version, "prepared writes are for another state version")
        for key, value in prepared.writes.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
        for index, entries in prepared.buckets.items():
            if entries:
                self._buckets[index] = entries
            else:
                self._buckets.pop(index, None)
        for depth, level in enumerate(prepared.nodes):
            target = self._levels[depth]
            for index, node in level.items():
                target[index] = node
        self._version += 1

    def apply_writes(self, writes: Writes) -> bytes:
        """Apply ``writes`` (``None`` deletes) and return the new root."""
        self.apply_prepared(self.prepare(writes))
        return self.root


class Overlay:
    """A copy-on-write view over a state or another overlay.

    Reads fall through to ``base``; writes stay here until ``commit``. Dropping
    the overlay aborts. ``writes`` keeps first-write order, values ``None`` for
    deletions.
    """

    __slots__ = ("base", "writes")

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def overlay(self) -> Overlay:
        return Overlay(self)

    def commit(self) -> None:
        """Apply the write set to ``base`` and empty this overlay."""
        base = self.base
        if isinstance(base, Overlay):
            base.writes.update(self.writes)
        elif isinstance(base, State):
            base.apply_writes(self.writes)
        else:
            raise TypeError(f"cannot commit into {type(base).__name__}")
        self.writes = {}


class SpeculativeState:
    """The committed state with the write sets of uncommitted blocks on top (consensus
    pipelining, issue 16): what a block at committed + 2 executes and is proposed on.

    Reads see ``writes`` (the merged write sets of the ``parents`` blocks in flight
    below, ``None`` deleted) over ``base``. ``prepare`` computes the root over base +
    ``writes`` + the block's own writes, so a block's state root is the one it will have
    once its parents commit. The ``PreparedWrites`` it returns holds the block's own
    writes with the buckets and tree nodes of the merged set, for the version ``base``
    has once its ``parents`` commits are applied: applied then (the parents' writes are
    in the state already, the buckets and nodes are the final ones), it gives the same
    state as preparing the block's writes again; at any other version
    ``State.apply_prepared`` refuses it. The ledger drops a result whose parent lost."""

    __slots__ = ("base", "parents", "writes")

    def __init__(self, base: State, writes: Writes, parents: int) -> None:
        check(parents >= 1, "a speculative state has at least one parent in flight")
        self.base = base
        self.writes = writes
        self.parents = parents

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    @property
    def version(self) -> int:
        """The base's version once the parents are committed."""
        return self.base.version + self.parents

    def overlay(self) -> Overlay:
        return Overlay(self)

    def prepare(self, writes: Writes, leaves: Leaves | None = None) -> PreparedWrites:
        merged = dict(self.writes)
        merged.update(writes)
        prepared = self.base.prepare(merged, leaves)
        return PreparedWrites(self.version, dict(writes), prepared.buckets, prepared.nodes)
