"""Outputs of ``Replica.step`` (raft's Ready). The shell carries them out in order.

Ordering contract: within one list, ledger actions (``ExecuteBlock``, ``CommitBlock``)
come first, then at most one ``Persist``, then the sends. The shell makes the
``Persist`` durable before any send that follows it, and writes a ``CommitBlock`` and
the ``Persist`` after it in one storage transaction (ARCHITECTURE.md "Storage").
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.certificate import CommitCertificate
from consensus.state import PersistentState


@dataclass(frozen=True, slots=True)
class Send:
    to_index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """To every other validator of the shard."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Persist:
    state: PersistentState


@dataclass(frozen=True, slots=True)
class ExecuteBlock:
    """Execute ``payload`` speculatively on ``parent`` (the block at height - 1) and
    answer ``BlockExecuted``. ``view`` is the PRE-PREPARE's view; a block re-proposed
    after a view change keeps its original header, whose view may be lower.

    ``parent`` is the committed tip, except with ``pipeline_depth`` > 1, where it may be
    the block in flight at height - 1 that this replica executed (speculative state on
    speculative state); the ledger must refuse a block that does not extend it. Empty
    means the committed tip (``pipeline_depth`` 1 always asks for the committed tip)."""

    view: int
    height: int
    payload: bytes
    block_hash: bytes
    parent: bytes = b""


@dataclass(frozen=True, slots=True)
class CommitBlock:
    """Apply the block (executing it first if this ledger has not) and store it with
    its certificate. Heights arrive strictly in order, each exactly once."""

    height: int
    view: int
    payload: bytes
    block_hash: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Deliver a ``Tick`` no later than ``deadline_ms``."""

    deadline_ms: int


@dataclass(frozen=True, slots=True)
class RequestSync:
    """Fetch committed blocks ``from_height..to_height`` with certificates, answer
    ``SyncResult``. ``peers`` are validators known to hold them."""

    from_height: int
    to_height: int
    peers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RequestProposal:
    """This replica is primary and may propose ``height`` in ``view``: when the batch
    policy says so (batch full, or interval elapsed with work pending), build the block
    on the committed tip (with ``pipeline_depth`` > 1: on ``Replica.chain_parent(height)``,
    the block this primary proposed at height - 1) and answer ``ProposalReady``."""

    height: int
    view: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message or event was ignored; ``reason`` is a stable short name to count."""

    reason: str
    detail: str = ""
    sender: int | None = None


@dataclass(frozen=True, slots=True)
class ViewChangeStarted:
    """Log as ``pbft.view_change``."""

    new_view: int
    reason: str


@dataclass(frozen=True, slots=True)
class ViewInstalled:
    """Log as ``pbft.new_view``."""

    view: int
    primary: int


Action = (
    Send
    | Broadcast
    | Persist
    | ExecuteBlock
    | CommitBlock
    | SetTimer
    | RequestSync
    | RequestProposal
    | Dropped
    | ViewChangeStarted
    | ViewInstalled
)
