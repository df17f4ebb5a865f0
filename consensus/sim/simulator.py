"""Deterministic fault simulator for the PBFT replica (STYLE.md: VOPR, FoundationDB):
the event loop and the run.

One seed fixes everything: which faults are on, the network's drops, delays,
duplicates and partitions, crashes and restarts from persisted state, up to f
byzantine replicas (equivocating primaries, or replicas sending forged, stale and
garbage messages and serving forged certificates) and the client load. The faults
are ``faults.py``'s (what a seed turns on, what byzantine replicas do) over
``network.py``'s ``FaultyNetwork``; the checkers are ``checkers.py``'s. The real
``Replica`` runs unchanged; a small shell per node plays the role of ``node/``: it
carries out actions, runs the batch policy and serves block sync from peers' stored
blocks. The ledger is ``doubles.TestLedger``.

A run has a fault phase (checkers on every commit) and a healed phase (no faults
except the byzantine replicas; all crashed replicas restarted) that must converge.
Pure: a seeded ``random.Random`` and a simulated clock, no I/O.
"""

from __future__ import annotations

import random
from collections import Counter
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
    ViewChangeStarted,
    ViewInstalled,
)
from consensus.batching import batch_due
from consensus.certificate import PreparedCertificate
from consensus.events import (
    BlockExecuted,
    Event,
    MessageReceived,
    ProposalReady,
    SyncedBlock,
    SyncResult,
    Tick,
)
from consensus.kernel.errors import InvariantViolation
from consensus.replica import Replica
from consensus.sim.checkers import Checker
from consensus.sim.doubles import TestLedger, make_keys
from consensus.sim.faults import Byzantine, draw_kinds, make_network, place_byzantine
from consensus.state import PersistentState, ReplicaConfig, Signer

CHAIN_ID = "shardnet-sim"


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    replicas: int = 4
    real_signatures: bool = False
    fault_ms: int = 3000
    heal_ms_max: int = 30000
    ops: int = 40
    batch_ops_max: int = 4
    block_interval_ms: int = 20
    tick_ms: int = 20
    latency_ms: tuple[int, int] = (1, 8)
    checkpoint_interval: int = 4
    request_timeout_ms: int = 400
    view_change_timeout_ms: int = 400
    retransmit_ms: int = 150
    sync_timeout_ms: int = 200
    faults: tuple[str, ...] | None = None  # None: chosen from the seed
    load_ms: int | None = None  # ops arrive within this window; None: the fault phase
    pipeline_depth: int = 1  # ReplicaConfig.pipeline_depth of every replica
    # Replica 0 (view 0's primary) censors: its blocks leave out one op drawn from the
    # seed (it reports the rest as its pending work); it is the run's byzantine replica.
    censor: bool = False
    command: str = "shardnet simulate"


@dataclass
class SimResult:
    seed: int
    ok: bool
    violations: list[str]
    faults: Counter[str]
    dropped: Counter[str]
    commits: int
    height: int
    max_view: int
    view_changes: int
    messages: int
    sim_ms: int
    repro: str
    last_commit_ms: int = 0
    # censor runs: the op left out, when it arrived, and when (in which view) the
    # first honest replica committed it (None: never)
    censored_op: int | None = None
    censored_arrival_ms: int | None = None
    censored_commit_ms: int | None = None
    censored_commit_view: int | None = None

    def describe(self) -> str:
        status = "ok" if self.ok else "FAILED"
        text = (
            f"seed {self.seed}: {status} height={self.height} view={self.max_view} "
            f"view_changes={self.view_changes} messages={self.messages} "
            f"sim_ms={self.sim_ms} faults={dict(self.faults)}"
        )
        if not self.ok:
            text += "\n  " + "\n  ".join(self.violations[:10]) + f"\n  reproduce: {self.repro}"
        return text


@dataclass
class Node:
    index: int
    signer: Signer
    replica: Replica
    ledger: TestLedger
    durable: PersistentState | None = None
    mempool: dict[int, int] = field(default_factory=dict)
    alive: bool = True
    byzantine: str | None = None
    want_since: int | None = None
    seen: list[bytes] = field(default_factory=list)
    # stale_prepared: height -> the prepared certificates (with payloads) it saw form
    stale: dict[int, dict[bytes, tuple[PreparedCertificate, bytes]]] = field(
        default_factory=dict
    )


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        rng = self.rng
        n = config.replicas
        self.f = (n - 1) // 3
        self.signers, self.verify = make_keys(n, f"sim-{config.seed}", config.real_signatures)
        self.validators = tuple(s.public_key for s in self.signers)
        self.kinds = draw_kinds(rng, config.faults, config.pipeline_depth)
        self.net = make_network(rng, self.kinds, config.latency_ms)
        self.faults = self.net.faults
        self.checker = Checker(CHAIN_ID, 0, self.validators, self.verify)
        self.dropped: Counter[str] = Counter()
        self.messages = 0
        self.last_commit_ms = 0
        self.view_changes = 0
        self.max_view = 0
        self.injected: list[int] = []
        self.nodes = [self._new_node(i, None) for i in range(n)]
        self.censored = place_byzantine(rng, self.nodes, self.kinds, self.f, config.censor,
                                        config.seed, config.ops)
        self.censored_arrival: int | None = None
        self.censored_commit: tuple[int, int] | None = None  # (time, view)
        self.byzantine = Byzantine(rng, self.faults, CHAIN_ID, n, self.censored)
        self._schedule_faults()

    @property
    def now(self) -> int:
        return self.net.now

    @property
    def healed(self) -> bool:
        return self.net.healed

    # ------------------------------------------------------------------ setup
    def _replica_config(self, index: int) -> ReplicaConfig:
        c = self.cfg
        return ReplicaConfig(
            chain_id=CHAIN_ID,
            shard=0,
            validators=self.validators,
            index=index,
            checkpoint_interval=c.checkpoint_interval,
            watermark_window=4 * c.checkpoint_interval,
            request_timeout_ms=c.request_timeout_ms,
            view_change_timeout_ms=c.view_change_timeout_ms,
            retransmit_ms=c.retransmit_ms,
            sync_timeout_ms=c.sync_timeout_ms,
            backoff_exponent_max=4,
            pipeline_depth=c.pipeline_depth,
        )

    def _new_node(self, index: int, old: Node | None) -> Node:
        signer = self.signers[index]
        state = old.durable if old is not None else None
        ledger = TestLedger.restore(old.ledger.blocks) if old is not None else TestLedger()
        replica = Replica(self._replica_config(index), signer, self.verify, state, self.now)
        node = Node(index, signer, replica, ledger, state)
        if old is not None:
            node.byzantine = old.byzantine
        return node

    def _push(self, at: int, kind: str, data: Any) -> None:
        self.net.push(at, kind, data)

    def _schedule_faults(self) -> None:
        c, rng = self.cfg, self.rng
        for op in range(1, c.ops + 1):
            self._push(rng.randrange(0, c.load_ms or c.fault_ms), "op", op)
        for i in range(c.replicas):
            self._push(rng.randrange(c.tick_ms), "tick", i)
        self.net.schedule_faults(range(c.replicas), c.fault_ms)

    def _send(self, src: int, dst: int, data: bytes) -> None:
        self.net.send(src, dst, data)

    # ------------------------------------------------------------------ shell
    def _step(self, node: Node, event: Event) -> None:
        if not node.alive:
            return
        try:
            actions = node.replica.step(event)
        except InvariantViolation as exc:
            self.checker.violations.append(f"node {node.index}: invariant: {exc}")
            node.alive = False
            return
        self.byzantine.stepped(node)
        self._apply(node, actions)
        if not isinstance(event, ProposalReady):
            self._maybe_propose(node)

    def _apply(self, node: Node, actions: list[Action]) -> None:
        self.checker.check_action_order(node.index, actions)
        for action in actions:
            if isinstance(action, (Send, Broadcast)):
                self._emit(node, action)
            elif isinstance(action, ExecuteBlock):
                ok, reason = node.ledger.execute(
                    action.view, action.height, action.payload, action.block_hash, action.parent
                )
                result = BlockExecuted(action.view, action.height, action.block_hash, ok, reason)
                self._push(self.now + self.rng.randint(0, 3), "event", (node.index, result))
            elif isinstance(action, CommitBlock):
                self._commit(node, action)
            elif isinstance(action, Persist):
                node.durable = action.state
            elif isinstance(action, RequestSync):
                self._serve_sync(node, action)
            elif isinstance(action, Dropped):
                self.dropped[action.reason] += 1
            elif isinstance(action, ViewChangeStarted):
                self.view_changes += node.byzantine is None
            elif isinstance(action, ViewInstalled):
                self.max_view = max(self.max_view, action.view)

    def _commit(self, node: Node, action: CommitBlock) -> None:
        try:
            ops = node.ledger.commit(
                action.height, action.view, action.payload, action.block_hash, action.certificate
            )
        except InvariantViolation as exc:
            self.checker.violations.append(f"node {node.index}: ledger: {exc}")
            node.alive = False
            return
        self.last_commit_ms = self.now
        for op in ops:
            node.mempool.pop(op, None)
        if node.byzantine is None and self.censored in ops and self.censored_commit is None:
            self.censored_commit = (self.now, action.view)
        if node.byzantine is None:
            self.checker.on_commit(
                node.index,
                action.height,
                action.block_hash,
                action.certificate,
                node.ledger.state_root,
            )

    def _emit(self, node: Node, action: Send | Broadcast) -> None:
        n = self.cfg.replicas
        targets = [action.to_index] if isinstance(action, Send) else range(n)
        for dst in targets:
            if dst == node.index:
                continue
            self.messages += 1
            data = self.byzantine.outgoing(node, dst, action.data,
                                           isinstance(action, Broadcast))
            self._send(node.index, dst, data)

    def _serve_sync(self, node: Node, req: RequestSync) -> None:
        peers = [p for p in req.peers if self.nodes[p].alive] or list(req.peers)
        peer = self.nodes[self.rng.choice(peers)]
        blocks = []
        for h in range(req.from_height, min(req.to_height, req.from_height + 16) + 1):
            if h > len(peer.ledger.blocks):
                break
            payload, block_hash, cert = peer.ledger.blocks[h - 1]
            blocks.append(SyncedBlock(h, payload, block_hash, self.byzantine.served(peer, cert)))
        delay = self.rng.randint(5, 40)
        self._push(self.now + delay, "event", (node.index, SyncResult(tuple(blocks))))

    def _shell_tick(self, node: Node) -> None:
        pool = self.byzantine.pending(node)
        oldest = min(pool.values()) if pool else None
        self._step(node, Tick(self.now, oldest))

    def _maybe_propose(self, node: Node) -> None:
        """The batch policy (consensus/batching.py) over the simulated mempool."""
        wanted = node.replica.wants_proposal()
        pool = self.byzantine.pending(node)
        if wanted is None or not pool or not node.alive:
            node.want_since = None if wanted is None else node.want_since
            return
        if node.want_since is None:
            node.want_since = self.now
        height, view = wanted
        parent = node.replica.chain_parent(height)
        # Ops already in the blocks in flight below (pipelining) are not pending here.
        in_flight = node.ledger.chain_ops(parent, height)
        pending = [op for op in pool if op not in in_flight]
        if not pending:
            return
        if batch_due(len(pending), False, self.cfg.batch_ops_max,
                     self.now - node.want_since, self.cfg.block_interval_ms):
            ops = sorted(pending, key=lambda op: (pool[op], op))
            payload, block_hash = node.ledger.build(
                height, view, node.index, ops[: self.cfg.batch_ops_max], parent
            )
            node.want_since = None
            self._step(node, ProposalReady(height, view, payload, block_hash))

    # ------------------------------------------------------------------ run
    def run(self) -> SimResult:
        c = self.cfg
        end = c.fault_ms + c.heal_ms_max
        converged_at: int | None = None
        while self.net.queue and self.checker.ok:
            at, kind, data = self.net.pop()
            if at > end:
                break
            handler = self._handlers[kind]
            handler(self, data)
            if self.healed and kind == "tick" and data == 0:
                if self._converged():
                    converged_at = converged_at if converged_at is not None else at
                    if at - converged_at >= 4 * c.retransmit_ms:
                        break
                else:
                    converged_at = None
        honest = [nd for nd in self.nodes if nd.byzantine is None]
        if self.checker.ok:
            self.checker.check_converged(
                {nd.index: (nd.ledger.committed_height, nd.ledger.state_root) for nd in honest},
                {nd.index: nd.ledger.committed_ops for nd in honest},
                self.injected,
            )
        heights = [nd.ledger.committed_height for nd in honest]
        repro = f"{c.command} --seeds 1 --start {c.seed} --replicas {c.replicas}"
        if c.real_signatures:
            repro += " --real-signatures"
        if c.pipeline_depth > 1:
            repro += f" --pipeline-depth {c.pipeline_depth}"
        if c.censor:
            repro += " --censor"
        commit = self.censored_commit
        return SimResult(
            seed=c.seed,
            ok=self.checker.ok,
            violations=list(self.checker.violations),
            faults=self.faults,
            dropped=self.dropped,
            commits=self.checker.commits_checked,
            height=max(heights) if heights else 0,
            max_view=self.max_view,
            view_changes=self.view_changes,
            messages=self.messages,
            sim_ms=self.now,
            repro=repro,
            last_commit_ms=self.last_commit_ms,
            censored_op=self.censored,
            censored_arrival_ms=self.censored_arrival,
            censored_commit_ms=commit[0] if commit is not None else None,
            censored_commit_view=commit[1] if commit is not None else None,
        )

    def _converged(self) -> bool:
        honest = [nd for nd in self.nodes if nd.byzantine is None]
        tips = {(nd.ledger.committed_height, nd.ledger.state_root) for nd in honest}
        if len(tips) != 1 or any(not nd.alive for nd in honest):
            return False
        return all(set(self.injected) <= nd.ledger.committed_ops for nd in honest)

    def _on_deliver(self, data: tuple[int, int, bytes]) -> None:
        src, dst, payload = data
        node = self.nodes[dst]
        if not node.alive:
            return
        self.byzantine.received(node, payload)
        self._step(node, MessageReceived(payload, src))

    def _on_tick(self, index: int) -> None:
        node = self.nodes[index]
        self._push(self.now + self.cfg.tick_ms, "tick", index)
        if not node.alive:
            return
        self._shell_tick(node)
        forged = self.byzantine.ticked(node)
        if forged is not None:
            self._send(node.index, *forged)

    def _on_event(self, data: tuple[int, Event]) -> None:
        index, event = data
        self._step(self.nodes[index], event)

    def _on_op(self, op: int) -> None:
        self.injected.append(op)
        if op == self.censored:
            self.censored_arrival = self.now
        for node in self.nodes:
            if node.alive and op not in node.ledger.committed_ops:
                node.mempool.setdefault(op, self.now)

    def _on_partition(self, duration: int) -> None:
        self.net.start_partition(range(self.cfg.replicas), duration)

    def _on_commit_loss(self, data: tuple[int, int]) -> None:
        self.net.start_commit_loss(*data)

    def _on_commit_loss_end(self, _: None) -> None:
        self.net.commit_loss = None

    def _on_unpartition(self, _: None) -> None:
        self.net.partition = None

    def _on_crash(self, data: tuple[int, int]) -> None:
        index, downtime = data
        node = self.nodes[index]
        if self.healed or not node.alive:
            return
        node.alive = False
        self.faults["crash"] += 1
        self._push(self.now + downtime, "restart", index)

    def _on_restart(self, index: int) -> None:
        old = self.nodes[index]
        if old.alive:
            return
        node = self._new_node(index, old)
        for op in self.injected:
            if op not in node.ledger.committed_ops:
                node.mempool[op] = self.now
        self.nodes[index] = node

    def _on_heal(self, _: None) -> None:
        self.net.heal()
        for node in self.nodes:
            if not node.alive and not any(
                v.startswith(f"node {node.index}:") for v in self.checker.violations
            ):
                self._on_restart(node.index)

    _handlers: dict[str, Callable[[Simulation, Any], None]] = {
        "deliver": _on_deliver,
        "tick": _on_tick,
        "event": _on_event,
        "op": _on_op,
        "partition": _on_partition,
        "unpartition": _on_unpartition,
        "commit_loss": _on_commit_loss,
        "commit_loss_end": _on_commit_loss_end,
        "crash": _on_crash,
        "restart": _on_restart,
        "heal": _on_heal,
    }


def run_seed(seed: int, **overrides: Any) -> SimResult:
    return Simulation(SimConfig(seed=seed, **overrides)).run()
