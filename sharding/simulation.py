"""Deterministic multi-shard simulation (STYLE.md: VOPR, FoundationDB; PROTOCOL.md 4-6).

S shards x n replicas, each a real ``consensus.replica.Replica`` driving a real
``sharding.ledger.Ledger``, with an ``InboundPool`` per node; one seed fixes all of it.
The shell plays ``node/``: it carries out the replica's actions, runs the batch policy
(the primary proposes when it holds runnable transactions *or* applicable inbound
receipts, with a per-block inbound budget), feeds the liveness timer with the oldest
pending item, serves block sync, and relays receipts as ``node/relay.py`` does: after a
commit, the block's f+1 relayers (its proposer and the next f validators) push each
destination's bundle to every node of that shard; every node pulls its channels
periodically (and for gaps) from a random node of the source shard, which answers from
its committed blocks.

Faults: ``consensus.simulator.FaultyNetwork`` over all nodes of all shards (drop,
delay, duplicate, reorder, partition, commit loss, crash + restart from the persisted
replica state and the committed blocks), and byzantine replicas: a *primary* that
proposes blocks with fabricated (forged certificate), unproven, duplicated or skipped
receipts, and a *forger* that sends and serves forged bundles. Transactions are real
Ed25519 (signed once per seed); validator signatures use the fast test signer unless
``real_signatures``. A fault phase is followed by a healed phase that must converge;
``simulation_checkers`` judges every commit and the end. A failing seed prints the
command that reproduces it. Pure: no I/O, no clock, a seeded ``random.Random``.
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
from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    fault_tolerance,
    quorum_size,
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
from consensus.kernel.errors import DecodeError, InvariantViolation, ShardnetError
from consensus.messages import Vote, decode_message
from consensus.replica import Replica
from consensus.sim.network import NETWORK_FAULTS, FaultyNetwork, is_commit_news
from consensus.state import PersistentState, ReplicaConfig
from sharding.block import Block, block_hash
from sharding.crossshard import (
    InvalidBundle,
    ProvenReceipt,
    ReceiptBundle,
    compute_bundle_slice,
    compute_bundles,
    decode_bundle,
    verify_bundle,
)
from sharding.header_rules import next_time_ms
from sharding.inbound import InboundPool
from sharding.ledger import Ledger
from sharding.receipts import Receipt
from sharding.records import get_in_cursor, get_out_seq
from sharding.simulation_checkers import CrossShardChecker
from sharding.simulation_world import (
    CHAIN_ID,
    LoadItem,
    MultiSimConfig,
    MultiSimResult,
    World,
    get_world,
    make_bad_block,
    make_forged_bundle,
    make_load,
)

BYZANTINE_KINDS = ("byzantine_primary", "forged_bundles")
FAULT_KINDS = (*NETWORK_FAULTS, *BYZANTINE_KINDS)
BYZANTINE_MODES = {"byzantine_primary": "primary", "forged_bundles": "forger"}
PULL_BLOCKS_MAX = 4
SYNC_BLOCKS_MAX = 16

NodeId = tuple[int, int]  # (shard, index)


@dataclass(eq=False)
class StoredBlock:
    """A committed block as storage keeps it, with its certificate and outgoing receipts."""

    payload: bytes
    block_hash: bytes
    certificate: CommitCertificate
    block: Block
    receipts: list[Receipt]


@dataclass(eq=False)
class SimNode:
    shard: int
    index: int
    replica: Replica
    ledger: Ledger
    blocks: list[StoredBlock]  # durable, like the persisted replica state
    durable: PersistentState | None = None
    pool: InboundPool = field(default_factory=InboundPool)
    mempool: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # hash -> (load, ms)
    alive: bool = True
    byzantine: str | None = None
    want_since: int | None = None
    bundles: dict[int, dict[int, ReceiptBundle]] = field(default_factory=dict)  # [h][dst]
    seen: dict[tuple[int, int], ProvenReceipt] = field(default_factory=dict)  # byzantine only
    strikes: dict[tuple[int, int], bool] = field(default_factory=dict)  # byzantine only

    @property
    def id(self) -> NodeId:
        return self.shard, self.index


class MultiShardSimulation:
    def __init__(self, config: MultiSimConfig) -> None:
        c = self.cfg = config
        self.rng = rng = random.Random(config.seed)
        self.world: World = get_world(c.shards, c.replicas, c.real_signatures, c.accounts)
        self.n, self.f = c.replicas, fault_tolerance(c.replicas)
        if c.faults is None:
            kinds = {k for k in FAULT_KINDS if rng.random() < 0.45}
        else:
            unknown = set(c.faults) - set(FAULT_KINDS)
            if unknown:
                raise ValueError(f"unknown fault kinds {sorted(unknown)}")
            kinds = set(c.faults)
        drop_p = rng.choice([0.02, 0.1, 0.25]) if "drop" in kinds else 0.0
        dup_p = rng.choice([0.05, 0.2]) if "duplicate" in kinds else 0.0
        self.kinds = kinds
        self.net = FaultyNetwork(rng, kinds, c.latency_ms, drop_p, dup_p, _is_commit_news)
        self.faults = self.net.faults
        self.dropped: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.relay: Counter[str] = Counter()
        self.bad_refusals: Counter[str] = Counter()
        self.bad_blocks: dict[bytes, str] = {}
        self.messages = self.view_changes = self.max_view = self.last_commit_ms = 0
        genesis = self.world.genesis
        self.checker = CrossShardChecker(
            CHAIN_ID, [[v.public_key for v in shard] for shard in genesis.validators],
            self.world.verify, self.world.supply, self.world.watched)
        self.ids: list[NodeId] = [(s, i) for s in range(c.shards) for i in range(c.replicas)]
        self.nodes = {nid: self._new_node(nid, None) for nid in self.ids}
        self._choose_byzantine()
        self.load: list[LoadItem] = make_load(rng, self.world, c.txs, c.load_ms or c.fault_ms)
        self.submitted: list[int] = []
        for i, item in enumerate(self.load):
            self.net.push(item.arrival_ms, "tx", i)
        for nid in self.ids:
            self.net.push(rng.randrange(c.tick_ms), "tick", nid)
            self.net.push(rng.randrange(c.pull_interval_ms), "pull", nid)
        self.net.schedule_faults(self.ids, c.fault_ms)

    @property
    def now(self) -> int:
        return self.net.now

    # ------------------------------------------------------------------ setup
    def _choose_byzantine(self) -> None:
        """At most f byzantine replicas per shard: the configured placements, then one
        of each byzantine kind the seed drew, in a random shard with room for it."""
        for spec in self.cfg.byzantine:
            where_shard, where_index, mode = spec.split("/")
            if mode not in BYZANTINE_MODES.values():
                raise ValueError(f"unknown byzantine mode {mode!r}")
            self.nodes[(int(where_shard), int(where_index))].byzantine = mode
        for shard in range(self.cfg.shards):
            count = sum(self.nodes[(shard, i)].byzantine is not None for i in range(self.n))
            if count > self.f:
                raise ValueError(f"shard {shard}: {count} byzantine replicas, f = {self.f}")
        for kind in sorted(self.kinds & set(BYZANTINE_KINDS)):
            shard = self.rng.randrange(self.cfg.shards)
            free = [i for i in range(self.n) if self.nodes[(shard, i)].byzantine is None]
            if self.n - len(free) < self.f:
                self.nodes[(shard, self.rng.choice(free))].byzantine = BYZANTINE_MODES[kind]

    def _replica_config(self, shard: int, index: int) -> ReplicaConfig:
        c = self.cfg
        return ReplicaConfig(
            chain_id=CHAIN_ID, shard=shard, index=index,
            validators=tuple(v.public_key for v in self.world.genesis.validators[shard]),
            checkpoint_interval=c.checkpoint_interval,
            watermark_window=4 * c.checkpoint_interval,
            request_timeout_ms=c.request_timeout_ms,
            view_change_timeout_ms=c.view_change_timeout_ms,
            retransmit_ms=c.retransmit_ms, sync_timeout_ms=c.sync_timeout_ms,
            backoff_exponent_max=4,
        )

    def _new_node(self, nid: NodeId, old: SimNode | None) -> SimNode:
        """A node at start, or restarted from what ``old`` persisted (replica state,
        committed blocks): its ledger replays the blocks, its pools start empty."""
        shard, index = nid
        ledger = Ledger(self.world.genesis, shard, verify=self.world.verify)
        blocks = old.blocks if old is not None else []
        for height, stored in enumerate(blocks, 1):
            ledger.commit(stored.payload, stored.block_hash, height)
        durable = old.durable if old is not None else None
        replica = Replica(self._replica_config(shard, index), self.world.signers[shard][index],
                          self.world.verify, durable, self.now)
        node = SimNode(shard, index, replica, ledger, blocks, durable)
        if old is not None:
            node.byzantine = old.byzantine
            for i in self.submitted:
                self._offer_tx(node, i)
        return node

    # ------------------------------------------------------------------ shell
    def _step(self, node: SimNode, event: Event) -> None:
        if not node.alive:
            return
        try:
            actions = node.replica.step(event)
        except InvariantViolation as exc:
            self._halt(node, f"invariant: {exc}")
            return
        self._apply(node, actions)
        if not isinstance(event, ProposalReady):
            self._maybe_propose(node)

    def _halt(self, node: SimNode, why: str) -> None:
        self.checker.violations.append(f"node {node.shard}/{node.index}: {why}")
        node.alive = False

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        self.checker.pbft[node.shard].check_action_order(node.index, actions)
        for action in actions:
            if isinstance(action, (Send, Broadcast)):
                self._emit(node, action)
            elif isinstance(action, ExecuteBlock):
                reason = node.ledger.execute(action.payload, action.block_hash, action.height,
                                             action.view)
                self._note_execution(node, action.block_hash, reason)
                result = BlockExecuted(action.view, action.height, action.block_hash,
                                       not reason, reason)
                self.net.push(self.now + self.rng.randint(0, 3), "event", (node.id, result))
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

    def _send(self, node: SimNode, dst: NodeId, kind: str, body: Any) -> None:
        self.messages += 1
        self.net.send(node.id, dst, (kind, body))

    def _emit(self, node: SimNode, action: Send | Broadcast) -> None:
        targets = [action.to_index] if isinstance(action, Send) else range(self.n)
        if self.bad_blocks and node.byzantine is None:
            self._watch_votes(node, action.data)
        for index in targets:
            if index != node.index:
                self._send(node, (node.shard, index), "pbft", action.data)

    def _commit(self, node: SimNode, action: CommitBlock) -> None:
        try:
            committed = node.ledger.commit(action.payload, action.block_hash, action.height)
        except ShardnetError as exc:
            self._halt(node, f"ledger: {exc.reason}: {exc}")
            return
        stored = StoredBlock(action.payload, action.block_hash, action.certificate,
                             committed.block, committed.result.receipts)
        node.blocks.append(stored)
        self.last_commit_ms = self.now
        self._forget_committed_txs(node)
        node.pool.prune(node.ledger.in_cursor)
        honest = node.byzantine is None
        first = action.height == len(self.checker.cursors[node.shard])
        self.checker.on_commit(node.shard, node.index, committed, action.certificate,
                               node.ledger, honest)
        if first:
            self.checker.check_conservation(
                self._leaders(), f"shard {node.shard} height {action.height}")
        if stored.receipts:
            self._relay(node, len(node.blocks))

    def _leaders(self) -> dict[int, Ledger]:
        """Per shard, the most advanced committed ledger (crashed nodes' included)."""
        best: dict[int, Ledger] = {}
        for node in self.nodes.values():
            held = best.get(node.shard)
            if held is None or node.ledger.height > held.height:
                best[node.shard] = node.ledger
        return best

    def _serve_sync(self, node: SimNode, req: RequestSync) -> None:
        peers = [p for p in req.peers if self.nodes[(node.shard, p)].alive] or list(req.peers)
        peer = self.nodes[(node.shard, self.rng.choice(peers))]
        last = min(req.to_height, req.from_height + SYNC_BLOCKS_MAX, len(peer.blocks))
        blocks = tuple(
            SyncedBlock(h, peer.blocks[h - 1].payload, peer.blocks[h - 1].block_hash,
                        peer.blocks[h - 1].certificate)
            for h in range(req.from_height, last + 1)
        )
        self.net.push(self.now + self.rng.randint(5, 40), "event", (node.id, SyncResult(blocks)))

    # ------------------------------------------------------------------ transactions
    def _offer_tx(self, node: SimNode, i: int) -> None:
        item = self.load[i]
        if item.shard == node.shard and item.nonce >= node.ledger.committed_nonce(item.sender):
            node.mempool.setdefault(item.digest, (i, self.now))

    def _forget_committed_txs(self, node: SimNode) -> None:
        for digest, (i, _) in list(node.mempool.items()):
            item = self.load[i]
            if item.nonce < node.ledger.committed_nonce(item.sender):
                del node.mempool[digest]

    def _runnable(self, node: SimNode) -> list[tuple[int, int]]:
        """(load index, arrival) of the transactions that can run now, in order: per
        sender the run of nonces from the committed one, heads first."""
        chains: dict[bytes, dict[int, tuple[int, int]]] = {}
        for i, at in node.mempool.values():
            item = self.load[i]
            chains.setdefault(item.sender, {})[item.nonce] = (i, at)
        ranked = []
        for sender, chain in chains.items():
            nonce = node.ledger.committed_nonce(sender)
            depth = 0
            while nonce in chain:
                i, at = chain[nonce]
                ranked.append((depth, at, i))
                nonce += 1
                depth += 1
        ranked.sort()
        return [(i, at) for _, at, i in ranked]

    def _oldest_pending(self, node: SimNode) -> int | None:
        waiting = [at for i, at in node.mempool.values()
                   if self.load[i].nonce == node.ledger.committed_nonce(self.load[i].sender)]
        ready = node.pool.oldest_ready_ms(node.ledger.in_cursor)
        if ready is not None:
            waiting.append(ready)
        return min(waiting, default=None)

    def _maybe_propose(self, node: SimNode) -> None:
        """The batch policy: a full batch, or the interval passed with work pending
        (runnable transactions or applicable inbound receipts); never an empty block."""
        wanted = node.replica.wants_proposal()
        if wanted is None or not node.alive:
            node.want_since = None
            return
        height, view = wanted
        runnable = self._runnable(node)
        if not runnable and not node.pool.ready(node.ledger.in_cursor):
            return
        if node.byzantine == "primary":
            # Behave in some slots, strike in others: a primary that has been honest
            # for a while holds applied and pending receipts to duplicate or skip.
            chance = 0.6 if node.seen else 0.2
            if node.strikes.setdefault(wanted, self.rng.random() < chance):
                self._propose_bad(node, height, view)
                return
        if node.want_since is None:
            node.want_since = self.now
        full = len(runnable) >= self.cfg.batch_txs_max
        if not full and self.now - node.want_since < self.cfg.block_interval_ms:
            return
        inbound = node.pool.select(node.ledger.in_cursor, self.cfg.inbound_budget)
        txs = [self.load[i].tx for i, _ in runnable[: 2 * self.cfg.batch_txs_max]]
        proposal = node.ledger.propose(txs, inbound, height=height, view=view, time_ms=self.now,
                                       proposer=node.index, txs_max=self.cfg.batch_txs_max)
        if not proposal.block.txs and not proposal.block.inbound:
            return
        node.want_since = None
        self._step(node, ProposalReady(height, view, proposal.payload, proposal.block_hash))

    # ------------------------------------------------------------------ receipts relay
    def _bundles_of(self, node: SimNode, height: int) -> dict[int, ReceiptBundle]:
        known = node.bundles.get(height)
        if known is None:
            stored = node.blocks[height - 1]
            known = node.bundles[height] = compute_bundles(
                stored.block.header, encode(stored.certificate), stored.receipts)
        return known

    def _relay(self, node: SimNode, height: int) -> None:
        """Push: the block's proposer and the next f validators each send every
        destination's bundle to all of its nodes."""
        proposer = node.blocks[height - 1].block.header.proposer
        if all((proposer + k) % self.n != node.index for k in range(self.f + 1)):
            return
        for dst, bundle in self._bundles_of(node, height).items():
            data = encode(bundle)
            self.relay["bundles_pushed"] += self.n
            for index in range(self.n):
                self._send(node, (dst, index), "bundle", data)

    def _receive_bundles(self, node: SimNode, blobs: list[bytes]) -> None:
        for data in blobs:
            try:
                bundle = decode_bundle(data)
                proven = verify_bundle(bundle, node.shard, node.ledger.validators,
                                       node.ledger.verified_sources)
            except (DecodeError, InvalidBundle) as exc:
                self.refused[exc.reason] += 1
                continue
            added = node.pool.add(proven, node.ledger.in_cursor, self.now)
            self.relay["receipts_pooled"] += added.added
            self.relay["receipts_known"] += added.duplicate + added.stale
            if node.byzantine == "primary":
                node.seen.update((p.channel_seq, p) for p in proven)
        self._maybe_propose(node)

    def _pull(self, node: SimNode) -> None:
        """Ask a random node of each source shard for the channel's missing receipts:
        a gap's range, or what follows the receipts we hold."""
        for src in range(self.cfg.shards):
            if src == node.shard:
                continue
            gap = node.pool.get_gaps(node.ledger.in_cursor).get(src)
            self.relay["pulls_gap" if gap is not None else "pulls"] += 1
            if gap is not None:
                first, last = gap
            else:
                first = node.pool.get_run_end(src, node.ledger.in_cursor(src)) + 1
                last = first + self.cfg.pull_receipts_max - 1
            self._send(node, (src, self.rng.randrange(self.n)), "pull", (first, last))

    def _serve_pull(self, node: SimNode, asker: NodeId, first: int, last: int) -> None:
        """Bundles of our committed blocks with channel (us -> asker's shard) receipts in
        [first, last], at most ``PULL_BLOCKS_MAX`` blocks."""
        dst = asker[0]
        answer = []
        for height, stored in enumerate(node.blocks, 1):
            seqs = [r.seq for r in stored.receipts if r.dst_shard == dst]
            if seqs and seqs[-1] >= first and seqs[0] <= last:
                bundle = compute_bundle_slice(self._bundles_of(node, height)[dst], first, last)
                answer.append(self._forged(bundle) if node.byzantine == "forger"
                              else encode(bundle))
                if len(answer) == PULL_BLOCKS_MAX:
                    break
        if answer:
            self.relay["bundles_served"] += len(answer)
            self._send(node, asker, "pulled", answer)

    # ------------------------------------------------------------------ byzantine
    def _watch_votes(self, node: SimNode, data: bytes) -> None:
        try:
            msg = decode_message(data, 1 << 24)
        except DecodeError:
            return
        if isinstance(msg, Vote) and msg.phase in (PHASE_PREPARE, PHASE_COMMIT) \
                and msg.block_hash in self.bad_blocks:
            self.checker.violations.append(
                f"node {node.shard}/{node.index}: honest replica voted phase {msg.phase} for "
                f"a {self.bad_blocks[msg.block_hash]} block at height {msg.height}")

    def _note_execution(self, node: SimNode, digest: bytes, reason: str) -> None:
        variant = self.bad_blocks.get(digest)
        if variant is None or node.byzantine is not None:
            return
        if not reason:
            self.checker.violations.append(
                f"node {node.shard}/{node.index}: honest ledger accepted a {variant} block")
        self.bad_refusals[f"{variant}:{reason.split(':')[0]}"] += 1

    def _propose_bad(self, node: SimNode, height: int, view: int) -> None:
        seen = [p for _, p in sorted(node.seen.items())]
        # Bad in its receipts only: proposer and time keep the header rules, so honest
        # replicas refuse it for what it carries.
        time_ms = next_time_ms(node.ledger.tip_time_ms, self.now)
        block, variant = make_bad_block(self.rng, self.world, node.ledger, seen, height=height,
                                        view=view, time_ms=time_ms, proposer=node.index)
        digest = block_hash(block)
        self.bad_blocks[digest] = variant
        self.faults[f"byzantine_{variant}"] += 1
        self._step(node, ProposalReady(height, view, encode(block), digest))

    def _forge(self, node: SimNode) -> None:
        """A forger pushes a forged copy of one of its shard's bundles somewhere."""
        heights = [h for h, stored in enumerate(node.blocks, 1) if stored.receipts]
        if not heights:
            return
        height = self.rng.choice(heights)
        for dst, bundle in self._bundles_of(node, height).items():
            self._send(node, (dst, self.rng.randrange(self.n)), "bundle",
                       self._forged(bundle))

    def _forged(self, bundle: ReceiptBundle) -> bytes:
        data, kind = make_forged_bundle(self.rng, bundle, quorum_size(self.n))
        self.faults[f"forged_{kind}"] += 1
        return data

    # ------------------------------------------------------------------ run
    def run(self) -> MultiSimResult:
        c = self.cfg
        end = c.fault_ms + c.heal_ms_max
        converged_at: int | None = None
        while self.net.queue and self.checker.ok:
            at, kind, data = self.net.pop()
            if at > end:
                break
            self._handlers[kind](self, data)
            if self.net.healed and kind == "tick" and data == self.ids[0]:
                if self._converged():
                    converged_at = at if converged_at is None else converged_at
                    if at - converged_at >= 4 * c.retransmit_ms:
                        break
                else:
                    converged_at = None
        if self.checker.ok:
            self.checker.check_final(self._honest_ledgers(), self._expected_nonces())
        return MultiSimResult(
            seed=c.seed, ok=self.checker.ok, violations=self.checker.all_violations(),
            faults=self.faults, dropped=self.dropped, refused=self.refused, relay=self.relay,
            bad_refusals=self.bad_refusals,
            commits=sum(len(node.blocks) for node in self.nodes.values()),
            heights=tuple(ledger.height for _, ledger in sorted(self._leaders().items())),
            max_view=self.max_view, view_changes=self.view_changes, messages=self.messages,
            sim_ms=self.now, repro=f"{c.command} {c.cli_args()}",
            receipts_applied=self.checker.applied, txs=len(self.submitted),
            last_commit_ms=self.last_commit_ms,
        )

    def _honest_ledgers(self) -> dict[int, list[tuple[str, Ledger]]]:
        honest: dict[int, list[tuple[str, Ledger]]] = {s: [] for s in range(self.cfg.shards)}
        for node in self.nodes.values():
            if node.byzantine is None:
                honest[node.shard].append((f"{node.shard}/{node.index}", node.ledger))
        return honest

    def _expected_nonces(self) -> list[tuple[int, bytes, int]]:
        counts: Counter[tuple[int, bytes]] = Counter(
            (item.shard, item.sender) for item in self.load)
        return [(shard, sender, count) for (shard, sender), count in sorted(counts.items())]

    def _converged(self) -> bool:
        honest = [nd for nd in self.nodes.values() if nd.byzantine is None]
        if any(not nd.alive for nd in honest) or len(self.submitted) < len(self.load):
            return False
        tips: dict[int, set[tuple[int, bytes]]] = {}
        for nd in honest:
            tips.setdefault(nd.shard, set()).add((nd.ledger.height, nd.ledger.state.root))
        if any(len(t) != 1 for t in tips.values()):
            return False
        leaders = self._leaders()
        for shard, sender, count in self._expected_nonces():
            if leaders[shard].committed_nonce(sender) != count:
                return False
        return all(
            get_out_seq(leaders[src].state, dst) == get_in_cursor(leaders[dst].state, src)
            for src in leaders for dst in leaders if src != dst
        )

    def _on_deliver(self, data: tuple[NodeId, NodeId, tuple[str, Any]]) -> None:
        src, dst, (kind, body) = data
        node = self.nodes[dst]
        if not node.alive:
            return
        if kind == "pbft":
            self._step(node, MessageReceived(body, src[1]))
        elif kind == "bundle":
            self._receive_bundles(node, [body])
        elif kind == "pulled":
            self._receive_bundles(node, body)
        else:
            self._serve_pull(node, src, *body)

    def _on_tick(self, nid: NodeId) -> None:
        self.net.push(self.now + self.cfg.tick_ms, "tick", nid)
        node = self.nodes[nid]
        if not node.alive:
            return
        self._step(node, Tick(self.now, self._oldest_pending(node)))
        if node.byzantine == "forger" and self.rng.random() < 0.3:
            self._forge(node)

    def _on_pull(self, nid: NodeId) -> None:
        self.net.push(self.now + self.cfg.pull_interval_ms, "pull", nid)
        if self.nodes[nid].alive:
            self._pull(self.nodes[nid])

    def _on_event(self, data: tuple[NodeId, Event]) -> None:
        nid, event = data
        self._step(self.nodes[nid], event)

    def _on_tx(self, i: int) -> None:
        self.submitted.append(i)
        for index in range(self.n):
            node = self.nodes[(self.load[i].shard, index)]
            if node.alive:
                self._offer_tx(node, i)

    def _on_partition(self, duration: int) -> None:
        self.net.start_partition(self.ids, duration)

    def _on_unpartition(self, _: None) -> None:
        self.net.partition = None

    def _on_commit_loss(self, data: tuple[NodeId, int]) -> None:
        self.net.start_commit_loss(*data)

    def _on_commit_loss_end(self, _: None) -> None:
        self.net.commit_loss = None

    def _on_crash(self, data: tuple[NodeId, int]) -> None:
        nid, downtime = data
        node = self.nodes[nid]
        if self.net.healed or not node.alive:
            return
        node.alive = False
        self.faults["crash"] += 1
        self.net.push(self.now + downtime, "restart", nid)

    def _on_restart(self, nid: NodeId) -> None:
        old = self.nodes[nid]
        if not old.alive:
            self.nodes[nid] = self._new_node(nid, old)

    def _on_heal(self, _: None) -> None:
        self.net.heal()
        for node in self.nodes.values():
            prefix = f"node {node.shard}/{node.index}:"
            if not node.alive and not any(v.startswith(prefix) for v in self.checker.violations):
                self._on_restart(node.id)

    _handlers: dict[str, Callable[[MultiShardSimulation, Any], None]] = {
        "deliver": _on_deliver, "tick": _on_tick, "pull": _on_pull, "event": _on_event,
        "tx": _on_tx, "partition": _on_partition, "unpartition": _on_unpartition,
        "commit_loss": _on_commit_loss, "commit_loss_end": _on_commit_loss_end,
        "crash": _on_crash, "restart": _on_restart, "heal": _on_heal,
    }


def _is_commit_news(data: tuple[str, Any]) -> bool:
    return data[0] == "pbft" and is_commit_news(data[1])


def run_multi_seed(seed: int, **overrides: Any) -> MultiSimResult:
    return MultiShardSimulation(MultiSimConfig(seed=seed, **overrides)).run()
