"""A hand-driven cluster of real replicas for the paper tests: every message is held
in an inbox until the test delivers it, so a test can drop, reorder or forge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.actions import (
    Action,
    Broadcast,
    CommitBlock,
    Dropped,
    ExecuteBlock,
    Persist,
    RequestSync,
    Send,
)
from consensus.certificate import Verifier
from consensus.events import BlockExecuted, Event, MessageReceived, ProposalReady, Tick
from consensus.kernel.limits import OBSERVED_MESSAGE_BYTES_MAX
from consensus.messages import Message, decode_message
from consensus.replica import Replica
from consensus.sim.doubles import TestLedger, make_keys
from consensus.state import PersistentState, ReplicaConfig, Signer

CHAIN = "test-chain"


@dataclass
class Cluster:
    n: int = 4
    real: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    signers: list[Signer] = field(init=False)
    verify: Verifier = field(init=False)
    replicas: list[Replica] = field(init=False)
    ledgers: list[TestLedger] = field(init=False)
    inbox: list[tuple[int, int, bytes]] = field(default_factory=list)
    log: list[list[Action]] = field(init=False)
    persisted: list[PersistentState | None] = field(init=False)
    auto_execute: bool = True
    now: int = 0

    def __post_init__(self) -> None:
        self.signers, self.verify = make_keys(self.n, "paper-tests", self.real)
        self.validators = tuple(s.public_key for s in self.signers)
        self.replicas = [self.make_replica(i) for i in range(self.n)]
        self.ledgers = [TestLedger() for _ in range(self.n)]
        self.log = [[] for _ in range(self.n)]
        self.persisted = [None] * self.n
        self.down: set[int] = set()

    def config(self, i: int) -> ReplicaConfig:
        opts = {"checkpoint_interval": 2, "watermark_window": 8, **self.options}
        return ReplicaConfig(CHAIN, 0, self.validators, i, **opts)

    def make_replica(self, i: int, state: PersistentState | None = None) -> Replica:
        return Replica(self.config(i), self.signers[i], self.verify, state, self.now)

    def restart(self, i: int) -> None:
        self.replicas[i] = self.make_replica(i, self.persisted[i])
        self.ledgers[i] = TestLedger.restore(self.ledgers[i].blocks)

    def step(self, i: int, event: Event) -> list[Action]:
        if i in self.down:
            return []
        actions = self.replicas[i].step(event)
        self.log[i].extend(actions)
        for action in actions:
            if isinstance(action, Broadcast):
                self.inbox.extend((d, i, action.data) for d in range(self.n) if d != i)
            elif isinstance(action, Send):
                self.inbox.append((action.to_index, i, action.data))
            elif isinstance(action, Persist):
                self.persisted[i] = action.state
            elif isinstance(action, ExecuteBlock) and self.auto_execute:
                ok, reason = self.ledgers[i].execute(
                    action.view, action.height, action.payload, action.block_hash
                )
                self.step(
                    i, BlockExecuted(action.view, action.height, action.block_hash, ok, reason)
                )
            elif isinstance(action, CommitBlock):
                self.ledgers[i].commit(
                    action.height, action.view, action.payload, action.block_hash,
                    action.certificate,
                )  # fmt: skip
        return actions

    def deliver(self, keep: Callable[[int, int, Message], bool] = lambda d, s, m: True) -> int:
        """Deliver queued messages until quiet; ``keep`` False drops a message."""
        count = 0
        while self.inbox:
            dst, src, data = self.inbox.pop(0)
            if dst in self.down:
                continue
            if not keep(dst, src, decode_message(data, OBSERVED_MESSAGE_BYTES_MAX)):
                continue
            count += 1
            self.step(dst, MessageReceived(data, src))
        return count

    def propose(self, ops: list[int], primary: int | None = None) -> bytes:
        p = primary if primary is not None else self.replicas[0].primary()
        wanted = self.replicas[p].wants_proposal()
        assert wanted is not None, f"replica {p} does not want to propose"
        height, view = wanted
        payload, block_hash = self.ledgers[p].build(height, view, p, ops)
        self.step(p, ProposalReady(height, view, payload, block_hash))
        return block_hash

    def tick(self, now: int, pending: int | None = None) -> None:
        self.now = now
        for i in range(self.n):
            self.step(i, Tick(now, pending))

    def dropped(self, i: int) -> list[str]:
        return [a.reason for a in self.log[i] if isinstance(a, Dropped)]

    def of_type(self, i: int, kind: type) -> list[Any]:
        return [a for a in self.log[i] if isinstance(a, kind)]

    def heights(self) -> list[int]:
        return [r.committed_height for r in self.replicas]

    def sync_requests(self, i: int) -> list[RequestSync]:
        return self.of_type(i, RequestSync)
