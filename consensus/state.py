"""Replica configuration, the signer interface and the state a replica persists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from consensus.certificate import (
    GENESIS_CHECKPOINT,
    GENESIS_HASH,
    U64,
    VALIDATORS_MAX,
    CheckpointProof,
    CommitCertificate,
    Hash32,
    PreparedCertificate,
    fault_tolerance,
    quorum_size,
)
from consensus.kernel.codec import WireStruct
from consensus.kernel.errors import check
from consensus.kernel.limits import MESSAGE_BYTES_MAX


class Signer(Protocol):
    """``consensus.kernel.crypto.KeyPair`` in production; ``testing.FastSigner`` in simulations."""

    public_key: bytes

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    chain_id: str
    shard: int
    validators: tuple[bytes, ...]
    index: int
    checkpoint_interval: int = 10
    watermark_window: int = 40
    request_timeout_ms: int = 2000
    view_change_timeout_ms: int = 2000
    retransmit_ms: int = 500
    sync_timeout_ms: int = 1000
    backoff_exponent_max: int = 6
    message_bytes_max: int = MESSAGE_BYTES_MAX
    views_ahead_max: int = 64
    # Heights in agreement at once (docs/CONSENSUS.md "Pipelining"): 1 runs one height
    # at a time; D > 1 lets PRE-PREPAREs and PREPAREs run up to D heights past the
    # committed one, each executed on the block in flight below it, while COMMITs
    # stay in height order.
    pipeline_depth: int = 1

    def __post_init__(self) -> None:
        n = len(self.validators)
        check(1 <= n <= VALIDATORS_MAX, f"validator count {n} out of range")
        check(0 <= self.index < n, f"index {self.index} not in 0..{n - 1}")
        check(len(set(self.validators)) == n, "duplicate validator key")
        check(self.checkpoint_interval >= 1, "checkpoint_interval must be >= 1")
        check(
            self.watermark_window > self.checkpoint_interval,
            "watermark_window must exceed checkpoint_interval (PBFT's L > K)",
        )
        check(
            1 <= self.pipeline_depth <= self.checkpoint_interval,
            "pipeline_depth must be in 1..checkpoint_interval",
        )
        check(self.retransmit_ms >= 1 and self.request_timeout_ms >= 1, "timeouts >= 1 ms")

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return fault_tolerance(self.n)

    @property
    def quorum(self) -> int:
        return quorum_size(self.n)


class VoteRecord(WireStruct, frozen=True):
    """The last vote of one phase this replica signed: never sign a conflicting one."""

    view: U64
    height: U64
    block_hash: Hash32


class PersistentState(WireStruct, frozen=True):
    """Everything a restarted replica needs so it never contradicts what it sent."""

    view: U64 = 0
    vote_floor: U64 = 0
    committed_height: U64 = 0
    committed_hash: Hash32 = GENESIS_HASH
    last_cert: CommitCertificate | None = None
    checkpoint: CheckpointProof = GENESIS_CHECKPOINT
    prepared: PreparedCertificate | None = None
    prepared_payload: bytes = b""
    last_pre_prepare: VoteRecord | None = None
    last_prepare: VoteRecord | None = None
    last_commit: VoteRecord | None = None
