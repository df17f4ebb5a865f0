"""PBFT wire messages (PROTOCOL.md section 4; Castro and Liskov 4.2-4.4).

One tagged union of ``WireStruct``s, decoded size-bounded and canonical-only. Each
message names its shard and sender and carries the sender's signature:

- PRE-PREPARE, PREPARE, COMMIT and CHECKPOINT are signed over vote digests
  (``certificate.vote_digest``), so the signatures collected from them form
  certificates directly. A PRE-PREPARE's payload is bound by the signed SHA-256.
- VIEW-CHANGE, NEW-VIEW and CERT (a commit certificate pushed to a lagging peer) are
  signed over ``tagged_hash(TAG_CONSENSUS_MSG, chain_id, shard, message-without-sig)``.
  A VIEW-CHANGE's payload is left out of its digest: NEW-VIEW relays view changes
  without payloads, and a payload is checked against the prepared certificate's
  signed payload hash instead.
"""

from __future__ import annotations

from typing import Annotated, Union

import msgspec

from consensus.certificate import (
    PHASE_CHECKPOINT,
    PHASE_PREPARE,
    U64,
    VALIDATORS_MAX,
    CheckpointProof,
    CommitCertificate,
    Hash32,
    Index,
    PreparedCertificate,
    Sig,
    pre_prepare_digest,
    vote_digest,
)
from consensus.kernel.codec import WireStruct, decode, encode
from consensus.kernel.crypto import TAG_CONSENSUS_MSG, sha256, tagged_hash

Phase = Annotated[int, msgspec.Meta(ge=PHASE_PREPARE, le=PHASE_CHECKPOINT)]
VIEW_CHANGES_MAX = VALIDATORS_MAX


class PrePrepare(WireStruct, frozen=True, tag=1):
    shard: U64
    view: U64
    height: U64
    block_hash: Hash32
    payload_hash: Hash32
    sender: Index
    signature: Sig
    payload: bytes
    prev_cert: CommitCertificate | None


class Vote(WireStruct, frozen=True, tag=2):
    """PREPARE, COMMIT or CHECKPOINT (the latter with view 0)."""

    shard: U64
    phase: Phase
    view: U64
    height: U64
    block_hash: Hash32
    sender: Index
    signature: Sig


class ViewChange(WireStruct, frozen=True, tag=3):
    """Castro and Liskov 4.4: the sender's stable checkpoint, its last commit
    certificate (heights up to it are committed, which is stronger than prepared) and
    its prepared certificate for the next height (COMMITs go in height order even when
    heights are pipelined, so nothing above it can have committed)."""

    shard: U64
    new_view: U64
    sender: Index
    checkpoint: CheckpointProof
    last_commit: CommitCertificate | None
    prepared: PreparedCertificate | None
    signature: Sig
    payload: bytes = b""


class NewView(WireStruct, frozen=True, tag=4):
    shard: U64
    view: U64
    sender: Index
    view_changes: Annotated[tuple[ViewChange, ...], msgspec.Meta(max_length=VIEW_CHANGES_MAX)]
    pre_prepare: PrePrepare | None
    signature: Sig


class CertNotice(WireStruct, frozen=True, tag=5):
    """A commit certificate sent to a peer whose messages show it is behind."""

    shard: U64
    sender: Index
    certificate: CommitCertificate
    signature: Sig


Message = PrePrepare | Vote | ViewChange | NewView | CertNotice
# typing.Union (not the | form) because codec.decode names the type in its errors.
_MESSAGE_TYPE = Union[PrePrepare, Vote, ViewChange, NewView, CertNotice]  # noqa: UP007


def decode_message(data: bytes, max_bytes: int) -> Message:
    """Raises only ``DecodeError``."""
    return decode(data, _MESSAGE_TYPE, max_bytes)  # type: ignore[arg-type]


def _envelope_digest(chain_id: str, shard: int, unsigned: WireStruct) -> bytes:
    return tagged_hash(TAG_CONSENSUS_MSG, encode([chain_id, shard]), encode(unsigned))


def signing_digest(chain_id: str, msg: Message) -> bytes:
    """The bytes the sender of ``msg`` signs (and the receiver verifies)."""
    if isinstance(msg, Vote):
        return vote_digest(chain_id, msg.shard, msg.view, msg.height, msg.block_hash, msg.phase)
    if isinstance(msg, PrePrepare):
        return pre_prepare_digest(
            chain_id, msg.shard, msg.view, msg.height, msg.block_hash, msg.payload_hash
        )
    if isinstance(msg, ViewChange):
        unsigned_vc = msgspec.structs.replace(msg, signature=b"", payload=b"")
        return _envelope_digest(chain_id, msg.shard, unsigned_vc)
    unsigned = msgspec.structs.replace(msg, signature=b"")
    return _envelope_digest(chain_id, msg.shard, unsigned)


def payload_digest(payload: bytes) -> bytes:
    return sha256(payload)


__all__ = [
    "CertNotice",
    "CheckpointProof",
    "CommitCertificate",
    "Message",
    "NewView",
    "PrePrepare",
    "PreparedCertificate",
    "ViewChange",
    "Vote",
    "decode_message",
    "payload_digest",
    "signing_digest",
]
