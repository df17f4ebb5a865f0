"""Inputs to ``Replica.step`` (STYLE.md: raft's Step). Frozen, slotted, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.certificate import CommitCertificate


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Raw bytes off the wire. ``sender_index`` is the validator index the transport
    authenticated the peer as, when it knows; the replica checks it against the signed
    sender inside the message. Garbage is fine: it comes back as ``Dropped``."""

    data: bytes
    sender_index: int | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time advanced. ``oldest_pending_ms`` is when the oldest transaction or inbound
    receipt still waiting in the shell's pool arrived (None when the pool is empty):
    when that time has not moved on (the work was not served) within the request
    timeout, commits of other work notwithstanding, a view change starts. Only a shell
    whose pool is empty may pass None: None restarts the request timer."""

    now_ms: int
    oldest_pending_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ProposalReady:
    """The shell built (and thereby executed) a block on its committed tip, answering
    ``RequestProposal(height, view)``; ignored unless still wanted."""

    height: int
    view: int
    payload: bytes
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class BlockExecuted:
    """The ledger's answer to ``ExecuteBlock``: ok when the payload hashes to
    ``block_hash``, the header fits (height, prev hash, header view <= view) and every
    root in the header matches the ledger's own result."""

    view: int
    height: int
    block_hash: bytes
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SyncedBlock:
    height: int
    payload: bytes
    block_hash: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Blocks fetched from peers in answer to ``RequestSync``; each is accepted only
    with a certificate that verifies, in height order from the next height."""

    blocks: tuple[SyncedBlock, ...]


Event = MessageReceived | Tick | ProposalReady | BlockExecuted | SyncResult
