"""Signed votes and the certificates built from them (PROTOCOL.md sections 3-4).

Every vote is a signature over ``tagged_hash(TAG_VOTE, encode(VoteBody(...)))``: chain
id, shard, view, height, block hash and phase. A quorum of such signatures forms a
certificate that anyone holding the shard's validator keys can check:

- ``CommitCertificate``: a quorum of COMMIT votes; travels with every committed block
  and is what other shards check before trusting a receipt.
- ``PreparedCertificate``: the primary's PRE-PREPARE signature plus quorum-1 PREPAREs
  from backups (Castro and Liskov 4.2, "prepared"); carried in VIEW-CHANGE.
- ``CheckpointProof``: a quorum of CHECKPOINT votes (4.3, "stable checkpoint").

All ``verify_*`` functions are pure, take the verifier as a parameter (real Ed25519 by
default) and never raise on bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import msgspec

from consensus.kernel.codec import WireStruct, encode
from consensus.kernel.crypto import HASH_BYTES, TAG_VOTE, tagged_hash, verify_signature
from consensus.kernel.limits import SIGNATURE_BYTES_MAX

Verifier = Callable[[bytes, bytes, bytes], bool]
"""``verify(public_key, message, signature) -> bool``; must never raise."""

PHASE_PRE_PREPARE = 1
PHASE_PREPARE = 2
PHASE_COMMIT = 3
PHASE_CHECKPOINT = 4

VALIDATORS_MAX = 1024
GENESIS_HASH = b"\x00" * HASH_BYTES

# msgspec bounds must fit int64; heights and views never get near 2**63.
U64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Index = Annotated[int, msgspec.Meta(ge=0, lt=VALIDATORS_MAX)]
Hash32 = Annotated[bytes, msgspec.Meta(min_length=HASH_BYTES, max_length=HASH_BYTES)]
Sig = Annotated[bytes, msgspec.Meta(max_length=SIGNATURE_BYTES_MAX)]


def fault_tolerance(n: int) -> int:
    """f: the most byzantine validators a shard of ``n`` tolerates."""
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """Smallest set any two of which share an honest member: 2f+1 when n = 3f+1."""
    return (n + fault_tolerance(n)) // 2 + 1


def primary_of(view: int, n: int) -> int:
    return view % n


class VoteBody(WireStruct, frozen=True):
    chain_id: str
    shard: int
    view: int
    height: int
    block_hash: bytes
    phase: int


def vote_digest(
    chain_id: str, shard: int, view: int, height: int, block_hash: bytes, phase: int
) -> bytes:
    """The bytes a validator signs for a PREPARE, COMMIT or CHECKPOINT vote."""
    return tagged_hash(TAG_VOTE, encode(VoteBody(chain_id, shard, view, height, block_hash, phase)))


def pre_prepare_digest(
    chain_id: str, shard: int, view: int, height: int, block_hash: bytes, payload_hash: bytes
) -> bytes:
    """The primary signs the payload's SHA-256 too, so a relayed payload can be checked."""
    body = VoteBody(chain_id, shard, view, height, block_hash, PHASE_PRE_PREPARE)
    return tagged_hash(TAG_VOTE, encode(body), payload_hash)


class IndexedSignature(WireStruct, frozen=True):
    index: Index
    signature: Sig


class CommitCertificate(WireStruct, frozen=True):
    """2f+1 COMMIT signatures for ``(view, height, block_hash)`` of one shard."""

    shard: U64
    view: U64
    height: U64
    block_hash: Hash32
    signatures: tuple[IndexedSignature, ...]


class PreparedCertificate(WireStruct, frozen=True):
    view: U64
    height: U64
    block_hash: Hash32
    payload_hash: Hash32
    pre_prepare_signature: Sig
    prepares: tuple[IndexedSignature, ...]


class CheckpointProof(WireStruct, frozen=True):
    """A stable checkpoint; height 0 with no signatures is the genesis checkpoint."""

    height: U64
    block_hash: Hash32
    signatures: tuple[IndexedSignature, ...]


GENESIS_CHECKPOINT = CheckpointProof(0, GENESIS_HASH, ())


def sorted_signatures(signatures: dict[int, bytes]) -> tuple[IndexedSignature, ...]:
    return tuple(IndexedSignature(i, signatures[i]) for i in sorted(signatures))


def verify_quorum(
    signatures: Sequence[IndexedSignature],
    digest: bytes,
    validators: Sequence[bytes],
    needed: int,
    verify: Verifier,
    exclude: int | None = None,
) -> bool:
    """At least ``needed`` valid signatures by distinct validators, indices ascending.

    Strictly ascending indices make the encoding canonical and rule out duplicates;
    any invalid entry rejects the whole set (a certificate is never padded with junk).
    """
    n = len(validators)
    if len(signatures) < needed or len(signatures) > n:
        return False
    previous = -1
    for entry in signatures:
        index = entry.index
        if index <= previous or index >= n or index == exclude:
            return False
        previous = index
    return all(verify(validators[e.index], digest, e.signature) for e in signatures)


def verify_certificate(
    cert: CommitCertificate,
    chain_id: str,
    shard: int,
    height: int,
    block_hash: bytes,
    validators: Sequence[bytes],
    verify: Verifier = verify_signature,
) -> bool:
    """True when ``cert`` commits ``block_hash`` at ``height`` on ``shard`` of ``chain_id``."""
    if not isinstance(cert, CommitCertificate):
        return False
    if cert.shard != shard or cert.height != height or cert.block_hash != block_hash:
        return False
    digest = vote_digest(chain_id, shard, cert.view, height, block_hash, PHASE_COMMIT)
    return verify_quorum(cert.signatures, digest, validators, quorum_size(len(validators)), verify)


def verify_prepared(
    cert: PreparedCertificate,
    chain_id: str,
    shard: int,
    validators: Sequence[bytes],
    verify: Verifier = verify_signature,
) -> bool:
    """A PRE-PREPARE by the view's primary plus 2f PREPAREs by distinct backups (4.2)."""
    n = len(validators)
    # Verify there is a validator set to name a primary in (an empty one proves nothing).
    if n == 0 or not isinstance(cert, PreparedCertificate):
        return False
    primary = primary_of(cert.view, n)
    pp_digest = pre_prepare_digest(
        chain_id, shard, cert.view, cert.height, cert.block_hash, cert.payload_hash
    )
    if not verify(validators[primary], pp_digest, cert.pre_prepare_signature):
        return False
    digest = vote_digest(chain_id, shard, cert.view, cert.height, cert.block_hash, PHASE_PREPARE)
    return verify_quorum(cert.prepares, digest, validators, quorum_size(n) - 1, verify, primary)


def verify_checkpoint(
    proof: CheckpointProof,
    chain_id: str,
    shard: int,
    validators: Sequence[bytes],
    verify: Verifier = verify_signature,
) -> bool:
    if proof.height == 0:
        return proof.block_hash == GENESIS_HASH and not proof.signatures
    digest = vote_digest(chain_id, shard, 0, proof.height, proof.block_hash, PHASE_CHECKPOINT)
    return verify_quorum(proof.signatures, digest, validators, quorum_size(len(validators)), verify)
