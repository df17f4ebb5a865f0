"""Every transaction the generator signed, and what became of it. Pure: times are
seconds since the start of the run, given by the caller.

Commits and receipts are learnt from block events (``/v1/events``, or the same
block read back by height after a reconnect: each (shard, height) is taken once).
A transaction is committed when a block of its shard lists it, finalized when its
receipts have been applied as many times as its kind needs (``Intent.inbound_hops``).
The exactly-once check: every transaction sent was committed exactly once or
rejected with a reason; its receipts applied no more often than expected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# On a resubmission (after a connection error or a timeout, the first attempt may
# have reached the node), these rejections mean "already there": still in flight.
ALREADY_THERE = frozenset({"duplicate", "nonce_taken", "wrong_nonce"})


@dataclass(slots=True)
class TxRecord:
    hash: str
    seq: int
    shard: int
    dst_shard: int
    kind: str
    hops_expected: int
    sender: bytes
    nonce: int
    submitted_s: float | None = None
    accepted: bool = False
    rejected: str | None = None  # reason
    commits: list[tuple[int, int]] = field(default_factory=list)  # (shard, height)
    committed_s: float | None = None
    failed: bool = False
    inbound: list[tuple[int, int, float]] = field(default_factory=list)  # (shard, height, t)
    finalized_s: float | None = None
    late: str | None = None  # outcome learnt at the end from GET /v1/txs (no latency)
    node: str | None = None  # the node that accepted it (until it is committed)

    @property
    def done(self) -> bool:
        """Nothing more to wait for."""
        if self.rejected is not None and not self.commits:
            return True
        if not self.commits and self.late is None:
            return False
        return self.failed or self.finalized_s is not None or self.hops_expected == 0 or \
            self.late in ("finalized", "failed")


@dataclass(frozen=True, slots=True)
class Change:
    """What a block did to one of our transactions (for the timeline)."""

    record: TxRecord
    what: str  # "committed" | "finalized"


class Tracker:
    def __init__(self) -> None:
        self.records: dict[str, TxRecord] = {}
        self.seen_blocks: set[tuple[int, int]] = set()
        self.rejections: Counter[str] = Counter()
        self.contradictions = 0  # rejected, then seen committed

    def add(self, record: TxRecord) -> None:
        self.records[record.hash] = record

    def on_submitted(self, digest: str, t: float) -> None:
        record = self.records[digest]
        if record.submitted_s is None:
            record.submitted_s = t

    def on_accepted(self, digest: str, node: str | None = None) -> None:
        record = self.records[digest]
        record.accepted = True
        record.node = node

    def accepted_by(self, node: str) -> list[TxRecord]:
        """Uncommitted transactions that ``node`` accepted: if it died before passing
        them on to its shard, only a resubmission saves them."""
        return [r for r in self.records.values()
                if r.node == node and not r.commits and r.rejected is None]

    def on_rejected(self, digest: str, reason: str, *, resubmission: bool = False) -> bool:
        """Record a rejection; False when it means the transaction is already there."""
        record = self.records[digest]
        if resubmission and reason in ALREADY_THERE:
            record.accepted = True
            return False
        if record.commits or record.rejected is not None:
            return False
        record.rejected = reason
        self.rejections[reason] += 1
        return True

    def on_block(self, event: Mapping[str, Any], t: float) -> list[Change]:
        """A committed block of any shard (each (shard, height) counts once)."""
        key = (int(event["shard"]), int(event["height"]))
        if key in self.seen_blocks:
            return []
        self.seen_blocks.add(key)
        changes: list[Change] = []
        for digest in event.get("txs", ()):
            record = self.records.get(digest)
            if record is None:
                continue
            record.commits.append(key)
            if len(record.commits) == 1:
                record.committed_s = t
                if record.rejected is not None:
                    self.rejections[record.rejected] -= 1
                    self.contradictions += 1
                    record.rejected = None
                changes.append(Change(record, "committed"))
                if record.hops_expected == 0:
                    record.finalized_s = t
        for digest in event.get("failed", ()):
            record = self.records.get(digest)
            if record is not None:
                record.failed = True
        for digest in event.get("inbound_origins", ()):
            record = self.records.get(digest)
            if record is None:
                continue
            record.inbound.append((key[0], key[1], t))
            if len(record.inbound) == record.hops_expected and record.finalized_s is None:
                record.finalized_s = t
                changes.append(Change(record, "finalized"))
        return changes

    def on_late(self, digest: str, status: dict[str, Any] | None) -> None:
        """The outcome of a straggler, read at the end from ``GET /v1/txs/{hash}``."""
        record = self.records[digest]
        if status is None:
            return
        state = str(status.get("status"))
        if state == "rejected":
            self.on_rejected(digest, str(status.get("error") or "rejected"))
        elif state in ("committed", "finalized", "failed"):
            record.late = state
            record.failed = record.failed or state == "failed"

    # -- reading -------------------------------------------------------------------

    def waiting(self) -> list[TxRecord]:
        """Sent and not done."""
        return [r for r in self.records.values() if r.submitted_s is not None and not r.done]

    def counts(self) -> dict[str, int]:
        sent = committed = finalized = failed = rejected = in_flight = cross = 0
        for r in self.records.values():
            if r.submitted_s is None:
                continue
            sent += 1
            cross += r.hops_expected > 0
            is_committed = bool(r.commits) or r.late is not None
            committed += is_committed
            failed += r.failed
            finalized += r.finalized_s is not None or r.late == "finalized"
            rejected += r.rejected is not None and not is_committed
            in_flight += not r.done
        return {"sent": sent, "committed": committed, "finalized": finalized,
                "failed": failed, "rejected": rejected, "in_flight": in_flight,
                "cross_shard": cross}

    def exactly_once(self) -> dict[str, Any]:
        """Lost: sent, neither committed nor rejected with a reason. Duplicated:
        committed in more than one block, or receipts applied more often than its
        kind makes (lists of hashes, capped by the caller)."""
        lost = [r.hash for r in self.records.values()
                if r.submitted_s is not None and not r.commits and r.late is None
                and r.rejected is None]
        duplicated = [r.hash for r in self.records.values()
                      if len(r.commits) > 1 or len(r.inbound) > r.hops_expected]
        return {"lost": lost, "duplicated": duplicated,
                "rejected_then_committed": self.contradictions}


def hop_latencies(records: Iterable[TxRecord]) -> dict[str, list[float]]:
    """Per-hop times (ms) of finalized cross-shard transactions: submit -> source
    commit, source commit -> applied on the destination, destination -> back home
    (swaps)."""
    hops: dict[str, list[float]] = {"source_commit": [], "to_destination": [], "return": []}
    for r in records:
        if r.hops_expected == 0 or r.finalized_s is None or r.submitted_s is None or \
                r.committed_s is None or not r.inbound:
            continue
        hops["source_commit"].append(1000 * (r.committed_s - r.submitted_s))
        hops["to_destination"].append(1000 * (r.inbound[0][2] - r.committed_s))
        if len(r.inbound) > 1:
            hops["return"].append(1000 * (r.inbound[1][2] - r.inbound[0][2]))
    return hops
