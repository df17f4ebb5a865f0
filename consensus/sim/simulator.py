"""Deterministic fault simulator for the PBFT replica (STYLE.md: VOPR, FoundationDB).

One seed fixes everything: which faults are on, the network's drops, delays,
duplicates and partitions, crashes and restarts from persisted state, up to f
byzantine replicas (equivocating primaries, or replicas sending forged, stale and
garbage messages and serving forged certificates) and the client load. The real
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
from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    IndexedSignature,
    PreparedCertificate,
    pre_prepare_digest,
    sorted_signatures,
    vote_digest,
)
from consensus.events import (
    BlockExecuted,
    Event,
    MessageReceived,
    ProposalReady,
    SyncedBlock,
    SyncResult,
    Tick,
)
from consensus.kernel.codec import encode
from consensus.kernel.errors import DecodeError, InvariantViolation
from consensus.kernel.limits import MESSAGE_BYTES_MAX
from consensus.messages import (
    CertNotice,
    PrePrepare,
    ViewChange,
    Vote,
    decode_message,
    payload_digest,
    signing_digest,
)
from consensus.replica import Replica
from consensus.sim.checkers import Checker
from consensus.sim.doubles import TestLedger, make_keys
from consensus.sim.network import FaultyNetwork, is_commit_news
from consensus.state import PersistentState, ReplicaConfig, Signer

FAULT_KINDS = (
    "drop",
    "delay",
    "duplicate",
    "reorder",
    "partition",
    "commit_loss",
    "crash",
    "equivocate",
    "forge",
)
# Drawn only at pipeline_depth > 1 (depth-1 seeds keep their draws): a byzantine
# replica that puts a stale prepared certificate (a block prepared at h+1 on a block
# at h that then lost) into its VIEW-CHANGEs.
PIPELINE_FAULT_KINDS = ("stale_prepared",)
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
        if config.faults is None:
            self.kinds = {k for k in FAULT_KINDS if rng.random() < 0.45}
        else:
            self.kinds = set(config.faults)
        if config.pipeline_depth > 1 and config.faults is None and rng.random() < 0.45:
            self.kinds.add("stale_prepared")
        drop_p = rng.choice([0.02, 0.1, 0.25]) if "drop" in self.kinds else 0.0
        dup_p = rng.choice([0.05, 0.2]) if "duplicate" in self.kinds else 0.0
        self.net = FaultyNetwork(rng, self.kinds, config.latency_ms, drop_p, dup_p, is_commit_news)
        self.faults = self.net.faults
        self.checker = Checker(CHAIN_ID, 0, self.validators, self.verify)
        self.dropped: Counter[str] = Counter()
        self.messages = 0
        self.last_commit_ms = 0
        self.view_changes = 0
        self.max_view = 0
        self.injected: list[int] = []
        self.nodes = [self._new_node(i, None) for i in range(n)]
        self.censored: int | None = None
        self.censored_arrival: int | None = None
        self.censored_commit: tuple[int, int] | None = None  # (time, view)
        if config.censor:
            # The censor is the run's one byzantine replica (the seed's own byzantine
            # kinds are off); its op is drawn apart, so the seed's draws stay the same.
            self.kinds -= {"equivocate", "forge", "stale_prepared"}
            self.nodes[0].byzantine = "censor"
            self.censored = random.Random(f"censor-{config.seed}").randint(1, config.ops)
        byzantine_kinds = sorted(self.kinds & {"equivocate", "forge", "stale_prepared"})
        if byzantine_kinds and self.f > 0:
            # Up to f byzantine replicas, each an equivocator or a forger.
            for index in rng.sample(range(n), rng.randint(1, self.f)):
                self.nodes[index].byzantine = rng.choice(byzantine_kinds)
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
        if node.byzantine == "stale_prepared":
            self._collect_prepared(node)
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
            data = action.data
            if node.byzantine == "equivocate" and isinstance(action, Broadcast):
                data = self._equivocate(node, dst, data)
            elif node.byzantine == "stale_prepared":
                data = self._stale_view_change(node, data)
            self._send(node.index, dst, data)

    def _serve_sync(self, node: Node, req: RequestSync) -> None:
        peers = [p for p in req.peers if self.nodes[p].alive] or list(req.peers)
        peer = self.nodes[self.rng.choice(peers)]
        blocks = []
        for h in range(req.from_height, min(req.to_height, req.from_height + 16) + 1):
            if h > len(peer.ledger.blocks):
                break
            payload, block_hash, cert = peer.ledger.blocks[h - 1]
            if peer.byzantine == "forge" and self.rng.random() < 0.5:
                cert = _forge_cert(cert, self.rng)
                self.faults["forged_sync"] += 1
            blocks.append(SyncedBlock(h, payload, block_hash, cert))
        delay = self.rng.randint(5, 40)
        self._push(self.now + delay, "event", (node.index, SyncResult(tuple(blocks))))

    def _pending(self, node: Node) -> dict[int, int]:
        """The node's pool as its shell reports and proposes it (a censor hides the op
        it censors, from its blocks and from its own request timer)."""
        if node.byzantine == "censor" and self.censored in node.mempool:
            return {op: t for op, t in node.mempool.items() if op != self.censored}
        return node.mempool

    def _shell_tick(self, node: Node) -> None:
        pool = self._pending(node)
        oldest = min(pool.values()) if pool else None
        self._step(node, Tick(self.now, oldest))

    def _maybe_propose(self, node: Node) -> None:
        """The batch policy (consensus/batching.py) over the simulated mempool."""
        wanted = node.replica.wants_proposal()
        pool = self._pending(node)
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

    # ------------------------------------------------------------------ byzantine
    def _equivocate(self, node: Node, dst: int, data: bytes) -> bytes:
        """Send the odd-numbered peers a different, validly signed block."""
        if dst % 2 == 0:
            return data
        try:
            msg = decode_message(data, MESSAGE_BYTES_MAX)
        except DecodeError:
            return data
        if not isinstance(msg, PrePrepare):
            return data
        alt_ops = [10_000_000 + msg.height * 100 + msg.view]
        parent = node.replica.chain_parent(msg.height)
        try:
            payload, block_hash = node.ledger.build(
                msg.height, msg.view, node.index, alt_ops, parent
            )
        except InvariantViolation:
            return data  # a PRE-PREPARE of a height no longer in flight here
        node.ledger.speculative.pop(block_hash, None)
        ph = payload_digest(payload)
        digest = pre_prepare_digest(CHAIN_ID, 0, msg.view, msg.height, block_hash, ph)
        alt = PrePrepare(
            0, msg.view, msg.height, block_hash, ph, node.index, node.signer.sign(digest),
            payload, msg.prev_cert,
        )  # fmt: skip
        self.faults["equivocate"] += 1
        return encode(alt)

    def _collect_prepared(self, node: Node) -> None:
        """Keep every prepared certificate this replica's votes show (any view)."""
        r = node.replica
        for (phase, view, height), box in r.votes.items():
            pp = r.pre_prepares.get((view, height))
            if phase != PHASE_PREPARE or pp is None:
                continue
            held = node.stale.setdefault(height, {})
            if pp.block_hash in held and held[pp.block_hash][0].view >= view:
                continue
            prepares = {s: sig for s, (d, sig) in box.items()
                        if d == pp.block_hash and s != r.primary(view)}
            if len(prepares) >= r.cfg.quorum - 1:
                cert = PreparedCertificate(view, height, pp.block_hash, pp.payload_hash,
                                           pp.signature, sorted_signatures(prepares))
                held[pp.block_hash] = (cert, pp.payload)

    def _stale_view_change(self, node: Node, data: bytes) -> bytes:
        """Replace the prepared certificate of a VIEW-CHANGE by another real one held
        for the same height (another block, any earlier view), re-signed."""
        try:
            vc = decode_message(data, MESSAGE_BYTES_MAX)
        except DecodeError:
            return data
        if not isinstance(vc, ViewChange):
            return data
        height = (vc.last_commit.height if vc.last_commit is not None else 0) + 1
        mine = vc.prepared.block_hash if vc.prepared is not None else None
        others = [held for d, held in sorted(node.stale.get(height, {}).items())
                  if d != mine and held[0].view < vc.new_view]
        if not others:
            return data
        cert, payload = max(others, key=lambda held: held[0].view)
        unsigned = ViewChange(0, vc.new_view, vc.sender, vc.checkpoint, vc.last_commit, cert,
                              b"")
        sig = node.signer.sign(signing_digest(CHAIN_ID, unsigned))
        self.faults["stale_prepared"] += 1
        return encode(ViewChange(0, vc.new_view, vc.sender, vc.checkpoint, vc.last_commit,
                                 cert, sig, payload))

    def _forge(self, node: Node) -> None:
        rng, n, r = self.rng, self.cfg.replicas, node.replica
        kind = rng.choice(["garbage", "wrong_sender", "bogus_vote", "stale_replay", "bad_cert"])
        self.faults[f"forge_{kind}"] += 1
        dst = rng.choice([i for i in range(n) if i != node.index])
        h = r.committed_height + 1
        if kind == "garbage":
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
        elif kind == "wrong_sender":
            # Half claim another validator (the transport knows better), half carry
            # our own index with a signature that does not verify.
            victim = rng.choice([i for i in range(n) if i != node.index] + [node.index] * n)
            data = encode(Vote(0, PHASE_COMMIT, r.view, h, rng.randbytes(32), victim, b"\x01" * 64))
        elif kind == "bogus_vote":
            phase = rng.choice([PHASE_PREPARE, PHASE_COMMIT])
            bogus = rng.randbytes(32)
            sig = node.signer.sign(vote_digest(CHAIN_ID, 0, r.view, h, bogus, phase))
            data = encode(Vote(0, phase, r.view, h, bogus, node.index, sig))
        elif kind == "stale_replay" and node.seen:
            data = rng.choice(node.seen)
        else:
            cert = r.last_cert
            if cert is None:
                return
            fake = _forge_cert(
                CommitCertificate(0, cert.view, h, rng.randbytes(32), cert.signatures), rng
            )
            unsigned = CertNotice(0, node.index, fake, b"")
            sig = node.signer.sign(signing_digest(CHAIN_ID, unsigned))
            data = encode(CertNotice(0, node.index, fake, sig))
        self._send(node.index, dst, data)

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
        if node.byzantine == "forge" and len(node.seen) < 64:
            node.seen.append(payload)
        self._step(node, MessageReceived(payload, src))

    def _on_tick(self, index: int) -> None:
        node = self.nodes[index]
        self._push(self.now + self.cfg.tick_ms, "tick", index)
        if not node.alive:
            return
        self._shell_tick(node)
        if node.byzantine == "forge" and self.rng.random() < 0.3:
            self._forge(node)

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


def _forge_cert(cert: CommitCertificate, rng: random.Random) -> CommitCertificate:
    sigs = list(cert.signatures)
    if sigs and rng.random() < 0.5:
        first = sigs[0]
        sigs[0] = IndexedSignature(first.index, bytes(64))
        return CommitCertificate(cert.shard, cert.view, cert.height, cert.block_hash, tuple(sigs))
    return CommitCertificate(
        cert.shard, cert.view, cert.height, cert.block_hash, tuple(sigs[: len(sigs) - 1])
    )


def run_seed(seed: int, **overrides: Any) -> SimResult:
    return Simulation(SimConfig(seed=seed, **overrides)).run()
