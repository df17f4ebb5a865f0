"""RFC 6962 Merkle trees and inclusion proofs (PROTOCOL.md section 1)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from sharding.merkle import (
    EMPTY_ROOT,
    InclusionProof,
    compute_proof,
    compute_root,
    is_valid_proof,
)


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """Reference: the recursive definition of RFC 6962 section 2.1."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


leaf_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=40)


def test_empty_root_is_the_fixed_constant() -> None:
    assert compute_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@given(st.lists(st.binary(max_size=40), max_size=70))
def test_root_matches_rfc6962_recursive_definition(leaves: list[bytes]) -> None:
    assert compute_root(leaves) == rfc6962_root(leaves)


@given(leaf_lists, st.data())
def test_proof_verifies_for_every_member(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    assert is_valid_proof(leaves[index], compute_proof(leaves, index), compute_root(leaves))


@given(leaf_lists, st.data(), st.binary(max_size=40))
def test_proof_fails_for_non_member(leaves: list[bytes], data: st.DataObject, other: bytes) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    if other == leaves[index]:
        return
    assert not is_valid_proof(other, compute_proof(leaves, index), compute_root(leaves))


@given(st.lists(st.binary(max_size=40), min_size=2, max_size=40), st.data())
def test_tampered_path_fails(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = compute_proof(leaves, index)
    root = compute_root(leaves)
    position = data.draw(st.integers(0, len(proof.path) - 1))
    flipped = bytes([proof.path[position][0] ^ 1]) + proof.path[position][1:]
    path = [*proof.path[:position], flipped, *proof.path[position + 1 :]]
    assert not is_valid_proof(leaves[index], InclusionProof(index, proof.tree_size, path), root)
    wrong_index = (index + 1) % len(leaves)
    moved = InclusionProof(wrong_index, proof.tree_size, proof.path)
    if leaves[wrong_index] != leaves[index]:
        assert not is_valid_proof(leaves[index], moved, root) or compute_proof(
            leaves, wrong_index
        ).path == proof.path


def test_malformed_proof_is_rejected_not_raised() -> None:
    root = compute_root([b"a", b"b"])
    assert not is_valid_proof(b"a", InclusionProof(5, 2, []), root)
    assert not is_valid_proof(b"a", InclusionProof(0, 2, [b"short"]), root)
    assert not is_valid_proof(b"a", InclusionProof(0, 2, []), root)
