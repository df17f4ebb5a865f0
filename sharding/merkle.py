"""Binary Merkle trees in the style of RFC 6962 (PROTOCOL.md section 1).

Leaves hash as ``H(0x00 || d)`` and nodes as ``H(0x01 || l || r)``; the tree of n
leaves splits at the largest power of two below n, so no leaf is duplicated and
a proof is an index plus the sibling path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from consensus.kernel.codec import WireStruct
from consensus.kernel.crypto import TAG_MERKLE_LEAF, TAG_MERKLE_NODE, sha256, tagged_hash

EMPTY_ROOT = sha256(b"")
MERKLE_PATH_MAX = 64


class InclusionProof(WireStruct, frozen=True):
    index: Annotated[int, msgspec.Meta(ge=0)]
    tree_size: Annotated[int, msgspec.Meta(ge=0)]
    path: Annotated[list[bytes], msgspec.Meta(max_length=MERKLE_PATH_MAX)]


def compute_leaf_hash(data: bytes) -> bytes:
    return tagged_hash(TAG_MERKLE_LEAF, data)


def compute_node_hash(left: bytes, right: bytes) -> bytes:
    return tagged_hash(TAG_MERKLE_NODE, left, right)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    # Bottom-up pairing gives the same tree as RFC 6962's recursive split:
    # an odd node at the end of a level is carried up unchanged.
    level = list(hashes)
    while len(level) > 1:
        paired = [
            compute_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def compute_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    return _root_of_hashes([compute_leaf_hash(leaf) for leaf in leaves])


def compute_root_of_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    if not leaf_hashes:
        return EMPTY_ROOT
    return _root_of_hashes(leaf_hashes)


def compute_proof(leaves: Sequence[bytes], index: int) -> InclusionProof:
    return compute_proofs(leaves, [index])[0]


def compute_proofs(leaves: Sequence[bytes], indices: Sequence[int]) -> list[InclusionProof]:
    """Inclusion proofs of several leaves of one tree: the tree's levels are built once
    (bottom-up, an odd last node carried up), then each path is read off them."""
    levels = [[compute_leaf_hash(leaf) for leaf in leaves]]
    while len(levels[-1]) > 1:
        level = levels[-1]
        paired = [compute_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
    proofs = []
    for index in indices:
        if not 0 <= index < len(leaves):
            raise IndexError(f"leaf index {index} outside tree of {len(leaves)}")
        path = []
        position = index
        for level in levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            position >>= 1
        proofs.append(InclusionProof(index=index, tree_size=len(leaves), path=path))
    return proofs


def is_valid_proof(leaf: bytes, proof: InclusionProof, root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2 verification; never raises on malformed proofs."""
    index, size = proof.index, proof.tree_size
    if not 0 <= index < size or len(proof.path) > MERKLE_PATH_MAX:
        return False
    fn, sn = index, size - 1
    node = compute_leaf_hash(leaf)
    for sibling in proof.path:
        if sn == 0 or len(sibling) != 32:
            return False
        if fn & 1 or fn == sn:
            node = compute_node_hash(sibling, node)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = compute_node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root
