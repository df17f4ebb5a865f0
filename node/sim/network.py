"""S shards x R production nodes in one process, one thread, one seed.

Each node is ``node.main.Node`` on simulation parts: a ``MemoryP2P`` member of one
``MemoryNetwork`` whose links follow the simulator's fault model (``faults.py``), a
``MemoryStore`` that outlives a crash (the node's disk), the virtual clock of the
loop (``loop.py``), the sequential block executor and inline offload. The world
(genesis, validator keys, funded accounts) and the client load (local transfers,
cross-shard transfers and swaps, signed with real Ed25519) are ``world.py``'s; the
checkers (``checkers.py``) are fed by every node's every commit.

A run: nodes start; transactions arrive at random nodes of their shard within the
load window; partitions, commit-loss windows and crashes (the node stops, its
memory is lost, its store kept; it restarts from the store) happen within the fault
phase; then everything heals and crashed nodes restart, the client resubmits what
has not committed, and the run ends once the network is quiescent (every
transaction committed, every shard's nodes on one tip, every channel drained) or
after ``heal_ms_max``. Checked: one block per height per shard under a valid
certificate and one state root (agreement), every receipt applied exactly once in
order and byte for byte as emitted, supply conserved on every first commit of a
height and in the nodes' own audit (``sharding/audit.py``) at the end, every
transaction committed exactly once, no node halted.

Faults inside nodes (``node/faults/``, set directly, no HTTP): a node of
``byzantine`` runs its mode from the start to the end; a ``LinkFault`` (``faults.py``, like
the placing of byzantine nodes and the parsers of both options) gives one
node's links to some peers a delay, loss or partition for a window (healed at the
latest with everything else). The byzantine node's commits are checked like
everyone's (inside, it is an honest replica and ledger); the final audit asks an
honest node of each shard. A seed that draws its faults (``faults=None``) may also
draw ``BYZANTINE_KINDS``: a ``fabricate_inbound`` primary of view 0 in one shard, a
``forge_receipts`` relayer anywhere (at most f byzantine nodes per shard).

Watched besides the checkers: every PREPARE and COMMIT an honest node sends; one for
an invalid block a byzantine primary sent (``wrong_roots``, ``fabricate_inbound``)
is a violation. The honest nodes' refusals of those blocks are counted by variant
and reason (``bad_refusals``), and the relay's work by path (``relay``: bundles
received and refused by push and by pull, gaps filled; ``refused``: bundles refused
by reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from consensus.certificate import PHASE_COMMIT, PHASE_PREPARE, CommitCertificate
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import KeyPair
from consensus.kernel.errors import DecodeError
from consensus.kernel.limits import CERTIFICATE_BYTES_MAX
from consensus.messages import Vote, decode_message
from consensus.sim.network import FaultyNetwork
from node.config import (
    ConsensusSection,
    ExecutorSection,
    NodeConfig,
    NodeSection,
)
from node.faults.state import (
    FABRICATE_INBOUND,
    WRONG_ROOTS,
    FaultState,
    LinkRule,
    names_of_validators,
)
from node.node import Node
from node.p2p.config import peer_id_from_public_key
from node.p2p.memory import MemoryNetwork, MemoryP2P
from node.parts import NodeParts, inline_offload, sequential_executor
from node.sim.checkers import CrossShardChecker
from node.sim.faults import (
    BYZANTINE_KINDS,
    FaultyLinks,
    LinkFault,
    NodeId,
    make_fault_network,
    place_byzantine,
)
from node.sim.loop import SimClock, SimulationStuck, run_virtual
from node.sim.world import LoadItem, World, get_world, make_load
from node.store import BlockCommit
from node.store.memory import MemoryStore
from node.wire import CHANNEL_CONSENSUS
from sharding.audit import compute_totals_audit, get_shard_totals_from_json
from sharding.block import decode_block
from sharding.ledger import Ledger
from sharding.receipts import Receipt
from sharding.records import get_in_cursor, get_out_seq
from sharding.tx import tx_hash

RECEIPT_BYTES_MAX = 4096
POLL_MS = 100  # how often the run checks for quiescence and halted nodes
LOG_EVENTS_KEPT = 2000
MESSAGE_BYTES_MAX = 64 * 1024 * 1024
INVALID_BLOCK_MODES = frozenset({WRONG_ROOTS, FABRICATE_INBOUND})


@dataclass(frozen=True)
class NetworkSimConfig:
    seed: int = 0
    shards: int = 2
    validators: int = 4
    txs: int = 40
    accounts: int = 16
    faults: tuple[str, ...] | None = ()  # FAULT_KINDS; None: drawn from the seed
    crashes: tuple[tuple[int, int, int, int], ...] = ()  # (shard, index, at_ms, down_ms)
    # (at_ms, duration_ms, groups of (shard, index))
    partitions: tuple[tuple[int, int, tuple[tuple[NodeId, ...], ...]], ...] = ()
    byzantine: tuple[tuple[int, int, str], ...] = ()  # (shard, index, mode), the whole run
    link_faults: tuple[LinkFault, ...] = ()
    fault_ms: int = 3000
    load_ms: int | None = None  # transactions arrive within this window; None: fault_ms
    heal_ms_max: int = 60_000
    latency_ms: tuple[int, int] = (1, 8)
    resubmit_ms: int = 2000  # after healing, the client resubmits what has not committed
    # The node that takes every submission (and resubmission) of its shard while it
    # runs; None: a random running node of the transaction's shard.
    submit_to: NodeId | None = None
    block_interval_ms: int = ConsensusSection().block_interval_ms
    request_timeout_ms: int = ConsensusSection().request_timeout_ms
    pipeline_depth: int = ConsensusSection().pipeline_depth  # consensus.pipeline_depth
    block_txs_max: int = ConsensusSection().block_txs_max
    command: str = "shardnet simulate --network"

    def cli_args(self) -> str:
        """The ``shardnet simulate --network`` options that rebuild this run."""
        args = (f"--shards {self.shards} --validators {self.validators} --seeds 1 "
                f"--start {self.seed} --txs {self.txs}")
        if self.faults is not None:
            args += f" --faults {','.join(self.faults) or 'none'}"
        for shard, index, mode in self.byzantine:
            args += f" --byzantine {shard}/{index}={mode}"
        for link in self.link_faults:
            args += f" --link-fault {link.spec()}"
        for shard, index, at_ms, down_ms in self.crashes:
            args += f" --crash {shard}/{index}:{at_ms}:{down_ms}"
        if self.partitions:
            args += " (and the test's explicit partitions)"
        if self.pipeline_depth != ConsensusSection().pipeline_depth:
            args += f" --pipeline-depth {self.pipeline_depth}"
        if self.submit_to is not None:
            args += f" (and every submission to {self.submit_to[0]}/{self.submit_to[1]})"
        return args


@dataclass
class NetworkSimResult:
    seed: int
    ok: bool
    violations: list[str]
    faults: Counter[str]
    heights: tuple[int, ...]  # per shard, the highest committed height
    blocks: int  # distinct blocks committed, all shards
    commits: int  # block commits, all nodes
    txs: int  # transactions committed
    receipts: int  # inbound receipts applied
    view_changes: int
    sim_ms: int
    wall_s: float
    trace: str  # SHA-256 over every commit of every node, in order
    repro: str
    log_tail: list[str] = field(default_factory=list)  # warnings before a failure
    byzantine_acts: Counter[str] = field(default_factory=Counter)  # by mode, all nodes
    events: Counter[str] = field(default_factory=Counter)  # log events by name, all nodes
    max_view: int = 0  # the highest view any node reached
    # Invalid blocks byzantine primaries sent, by variant (fabricate_inbound's, or
    # wrong_roots), and the honest nodes' refusals of them as "variant:reason".
    invalid_sent: Counter[str] = field(default_factory=Counter)
    bad_refusals: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # bundles refused, by reason
    relay: Counter[str] = field(default_factory=Counter)  # bundles received by path, gaps

    def describe(self) -> str:
        status = "ok" if self.ok else "FAILED"
        text = (f"seed {self.seed}: {status} heights={list(self.heights)} "
                f"blocks={self.blocks} txs={self.txs} receipts={self.receipts} "
                f"view_changes={self.view_changes} sim_ms={self.sim_ms} "
                f"wall={self.wall_s:.2f}s faults={dict(self.faults)}")
        if not self.ok:
            text += ("\n  " + "\n  ".join(self.violations[:10])
                     + f"\n  reproduce: {self.repro}")
        return text


class ObservedStore(MemoryStore):
    """The node's store, telling the simulation about every commit once it is written."""

    def __init__(self, on_commit: Callable[[BlockCommit], None]) -> None:
        super().__init__()
        self._on_commit = on_commit

    async def commit_block(self, commit: BlockCommit) -> None:
        await super().commit_block(commit)
        self._on_commit(commit)

    def reopen(self) -> ObservedStore:
        """What a restarted node finds on its disk: everything committed (the old
        object stays closed, so a write of the dead node fails instead of landing)."""
        store = ObservedStore(self._on_commit)
        store.blocks, store.heights_by_hash = dict(self.blocks), dict(self.heights_by_hash)
        store.state, store.receipts = dict(self.state), dict(self.receipts)
        store.inbound, store.txs = dict(self.inbound), dict(self.txs)
        store.metadata = dict(self.metadata)
        return store


@dataclass(eq=False)
class Member:
    nid: NodeId
    peer_id: str
    node: Node
    p2p: MemoryP2P
    store: ObservedStore
    ledger: Ledger | None = None
    alive: bool = False
    view_changes: int = 0  # of previous incarnations
    byzantine_acts: Counter[str] = field(default_factory=Counter)  # previous incarnations


@contextlib.contextmanager
def captured_logs(events: deque[dict[str, Any]], counts: Counter[str] | None = None,
                  observe: Callable[[dict[str, Any]], None] | None = None) -> Iterator[None]:
    """Node logs (info and above) go to ``events`` instead of stdout for the run;
    ``counts`` counts them by event name; ``observe`` sees each one."""
    old = structlog.get_config()

    def keep(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        with contextlib.suppress(RuntimeError):
            event["t_ms"] = int(asyncio.get_running_loop().time() * 1000)
        event["level"] = method
        kept = dict(event)
        events.append(kept)
        if counts is not None:
            counts[str(event.get("event"))] += 1
        if observe is not None:
            observe(kept)
        raise structlog.DropEvent

    structlog.configure(processors=[keep], cache_logger_on_first_use=False,
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield
    finally:
        structlog.configure(**old)


class NetworkSimulation:
    def __init__(self, config: NetworkSimConfig) -> None:
        c = self.cfg = config
        self.rng = rng = random.Random(config.seed)
        self.world: World = get_world(c.shards, c.validators, True, c.accounts)
        network_kinds = None if c.faults is None else tuple(
            k for k in c.faults if k not in BYZANTINE_KINDS)
        self.net: FaultyNetwork = make_fault_network(rng, network_kinds, c.latency_ms)
        self.faults = self.net.faults
        self.load: list[LoadItem] = make_load(rng, self.world, c.txs, c.load_ms or c.fault_ms)
        genesis = self.world.genesis
        self.checker = CrossShardChecker(
            genesis.chain_id, [[v.public_key for v in shard] for shard in genesis.validators],
            self.world.verify, self.world.supply, self.world.watched)
        self.ids: list[NodeId] = [(s, i) for s in range(c.shards) for i in range(c.validators)]
        self.peers = {nid: peer_id_from_public_key(genesis.validators[nid[0]][nid[1]].public_key)
                      for nid in self.ids}
        self.network = MemoryNetwork(FaultyLinks(self.net, {p: n for n, p in self.peers.items()},
                                                 watch=self._watch_votes))
        self.members: dict[NodeId, Member] = {}  # built on the loop (their clock reads it)
        self.logs: deque[dict[str, Any]] = deque(maxlen=LOG_EVENTS_KEPT)
        self.events: Counter[str] = Counter()
        # Faults inside nodes: a state for each node that has some, kept across restarts.
        self.fault_states: dict[NodeId, FaultState] = {}
        self.byzantine = place_byzantine(c.seed, c.shards, c.validators, c.faults,
                                         c.byzantine, self.peers, self.faults)
        for (shard, index), mode in self.byzantine.items():
            self._fault_state((shard, index)).set_byzantine(mode)
        for link in c.link_faults:
            unknown = [n for n in (link.node, *(link.peers or ())) if n not in self.peers]
            if unknown:
                raise ValueError(f"link fault: no node {unknown[0][0]}/{unknown[0][1]}")
            if link.node in (link.peers or ()):
                raise ValueError(f"link fault: {link.node[0]}/{link.node[1]} names itself")
            LinkRule(delay_ms=link.delay_ms, loss=link.loss)  # FaultError when out of range
            self._fault_state(link.node)
        for shard, index, _, _ in c.crashes:
            if (shard, index) not in self.peers:
                raise ValueError(f"crash: no node {shard}/{index}")
        self.byzantine_nodes = set(self.byzantine)
        self.byzantine_names = {f"shard{s}-node{i}" for s, i in self.byzantine}
        self.invalid_blocks: dict[bytes, str] = {}  # digest -> variant, all byzantine nodes
        self.invalid_sent: Counter[str] = Counter()
        self.bad_refusals: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.relay: Counter[str] = Counter()
        self.trace = hashlib.sha256()
        self.commits = 0
        self.committed_txs: Counter[bytes] = Counter()  # tx hash -> canonical blocks with it
        self.accepted: set[int] = set()  # load items some node accepted
        self.tasks: set[asyncio.Task[Any]] = set()
        self.t0 = 0.0
        self.sim_ms = 0

    # -- watching byzantine acts -------------------------------------------------------

    def _observe(self, event: dict[str, Any]) -> None:
        """What the nodes' logs say about byzantine acts, refusals and the relay."""
        name = event.get("event")
        if name == "faults.byzantine_act":
            if event.get("mode") in INVALID_BLOCK_MODES and "sent_block" in event:
                digest = bytes.fromhex(event["sent_block"])
                if digest not in self.invalid_blocks:
                    variant = str(event.get("variant", event.get("mode")))
                    self.invalid_blocks[digest] = variant
                    self.invalid_sent[variant] += 1
        elif name == "block.rejected":
            refused = self.invalid_blocks.get(bytes.fromhex(str(event.get("block", ""))))
            if refused is not None and event.get("node") not in self.byzantine_names:
                self.bad_refusals[f"{refused}:{str(event.get('reason')).split(':')[0]}"] += 1
        elif name == "receipt.refused":
            self.refused[str(event.get("reason"))] += 1
            self.relay[f"refused_{event.get('via')}"] += 1
        elif name == "receipt.received":
            self.relay[f"received_{event.get('via')}"] += 1
        elif name == "receipt.gap_filled":
            self.relay["gaps_filled"] += 1

    def _watch_votes(self, src: NodeId, kind: str, channel: int, data: bytes) -> None:
        """Every message between nodes: an honest PREPARE or COMMIT for an invalid
        block a byzantine primary sent is a violation."""
        if (not self.invalid_blocks or channel != CHANNEL_CONSENSUS
                or src in self.byzantine_nodes
                or not any(digest in data for digest in self.invalid_blocks)):
            return
        try:
            message = decode_message(data, MESSAGE_BYTES_MAX)
        except DecodeError:
            return
        if (isinstance(message, Vote) and message.phase in (PHASE_PREPARE, PHASE_COMMIT)
                and message.block_hash in self.invalid_blocks):
            self.checker.violations.append(
                f"node {src[0]}/{src[1]}: honest node voted phase {message.phase} for a "
                f"{self.invalid_blocks[message.block_hash]} block at height {message.height}")

    # -- members ------------------------------------------------------------------------

    def _fault_state(self, nid: NodeId) -> FaultState:
        state = self.fault_states.get(nid)
        if state is None:
            key = self.world.genesis.validators[nid[0]][nid[1]].public_key
            state = self.fault_states[nid] = FaultState(
                names_of_validators(self.world.genesis.validators, key,
                                    peer_id_from_public_key),
                seed=f"{self.cfg.seed}/{nid[0]}/{nid[1]}/faults")
        return state

    def _member(self, nid: NodeId, peer_id: str, old: Member | None) -> Member:
        shard, index = nid
        c = self.cfg
        config = NodeConfig(
            node=NodeSection(shard=shard, index=index),
            consensus=ConsensusSection(block_interval_ms=c.block_interval_ms,
                                       request_timeout_ms=c.request_timeout_ms,
                                       view_change_timeout_ms=c.request_timeout_ms,
                                       pipeline_depth=c.pipeline_depth,
                                       block_txs_max=c.block_txs_max),
            executor=ExecutorSection(workers=1))
        key = cast(KeyPair, self.world.signers[shard][index])
        store = old.store.reopen() if old is not None else ObservedStore(
            lambda commit: self._on_commit(nid, commit))
        p2p = self.network.join(peer_id, [p for p in self.peers.values() if p != peer_id])
        parts = NodeParts(p2p=p2p, store=store, clock=SimClock(asyncio.get_running_loop()),
                          executor=sequential_executor, offload=inline_offload,
                          rng=random.Random(f"{c.seed}/{shard}/{index}"), serve_http=False)
        node = Node(config, self.world.genesis, key, parts, faults=self.fault_states.get(nid))
        member = Member(nid, peer_id, node, p2p, store)
        if old is not None:
            member.view_changes = old.view_changes + old.node.running.driver.view_changes
            member.byzantine_acts = old.byzantine_acts + self._acts_of(old)
        return member

    async def _start(self, member: Member) -> None:
        await member.node.start()
        member.ledger = member.node.running.ledger
        member.alive = True

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _at(self, ms: int, callback: Callable[..., Any], *args: Any) -> None:
        asyncio.get_running_loop().call_at(self.t0 + ms / 1000, callback, *args)

    @property
    def now_ms(self) -> int:
        return round((asyncio.get_running_loop().time() - self.t0) * 1000)

    # -- commits ------------------------------------------------------------------------

    def _on_commit(self, nid: NodeId, commit: BlockCommit) -> None:
        shard, index = nid
        member = self.members[nid]
        ledger = member.node.running.ledger
        block = decode_block(commit.block)
        receipts = [decode(r.receipt, Receipt, RECEIPT_BYTES_MAX) for r in commit.receipts]
        cert = decode(commit.certificate, CommitCertificate, CERTIFICATE_BYTES_MAX)
        self.commits += 1
        self.trace.update(b"%d %d %d %d " % (self.now_ms, shard, index, commit.height)
                          + commit.block_hash)
        first = commit.height == len(self.checker.cursors[shard])
        # The store's state at this height: the ledger may be a height further already
        # (the driver applies the next commit while this one is written, issue 16).
        store = member.node.store
        assert isinstance(store, MemoryStore)
        root = (ledger.state.root if ledger.height == commit.height
                else block.header.state_root)
        self.checker.on_block(shard, index, commit.height, commit.block_hash, block, receipts,
                              cert, store.state, root, True)
        if first:
            self.committed_txs.update(tx_hash(tx) for tx in block.txs)
            self.checker.check_conservation(self._leaders(),
                                            f"shard {shard} height {commit.height}")

    def _leaders(self) -> dict[int, Ledger]:
        """Per shard, the most advanced committed ledger (crashed nodes' included)."""
        best: dict[int, Ledger] = {}
        for member in self.members.values():
            ledger = member.ledger
            held = best.get(member.nid[0])
            if ledger is not None and (held is None or ledger.height > held.height):
                best[member.nid[0]] = ledger
        return best

    # -- the client ---------------------------------------------------------------------

    async def _submit(self, i: int) -> None:
        item = self.load[i]
        alive = [m for m in self.members.values() if m.nid[0] == item.shard and m.alive]
        if not alive:
            return  # the resubmission after healing tries again
        target = self.members.get(self.cfg.submit_to) if self.cfg.submit_to else None
        member = (target if target in alive else alive[self.rng.randrange(len(alive))])
        results = await member.node.service.submit_txs([encode(item.tx)])
        if results[0].accepted:
            self.accepted.add(i)

    def _pending(self) -> list[int]:
        leaders = self._leaders()
        return [i for i, item in enumerate(self.load)
                if leaders[item.shard].committed_nonce(item.sender) <= item.nonce]

    def _resubmit(self) -> None:
        for i in self._pending():
            self._spawn(self._submit(i))
        self._at(self.now_ms + self.cfg.resubmit_ms, self._resubmit)

    # -- faults -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Move what the fault model scheduled (windows, crashes, the heal) to the loop."""
        while self.net.queue:
            at, _, kind, data = heapq.heappop(self.net.queue)
            self._at(at, self._on_fault, kind, data)

    def _on_fault(self, kind: str, data: Any) -> None:
        self.net.now = self.now_ms
        if kind == "partition":
            self.net.start_partition(self.ids, data)
            groups = self.net.partition or []
            self.net.partition = None  # the memory network cuts the links instead
            self._partition([tuple(g) for g in groups])
        elif kind == "unpartition":
            self.network.heal_all()
        elif kind == "commit_loss":
            self.net.start_commit_loss(*data)
        elif kind == "commit_loss_end":
            self.net.commit_loss = None
        elif kind == "crash":
            victim, downtime = data
            self._spawn(self._crash(victim, downtime))
        elif kind == "heal":
            self._spawn(self._heal())
        self._pump()

    def _partition(self, groups: list[tuple[NodeId, ...]]) -> None:
        if self.net.healed:
            return
        self.network.partition([[self.members[n].peer_id for n in g] for g in groups])

    def _link_fault(self, link: LinkFault, on: bool) -> None:
        if on and self.net.healed:
            return
        if on:
            self.faults["link_fault"] += 1
        peers: list[str] | str = ("*" if link.peers is None else
                                  [f"shard{s}-node{i}" for s, i in link.peers])
        rule = (LinkRule(delay_ms=link.delay_ms, loss=link.loss, partition=link.partition)
                if on else LinkRule())
        self.fault_states[link.node].set_links(peers, rule)

    @staticmethod
    def _acts_of(member: Member) -> Counter[str]:
        byzantine = member.node.byzantine
        return Counter() if byzantine is None else Counter(byzantine.acts)

    def _explicit_partition(self, duration_ms: int, groups: list[tuple[NodeId, ...]]) -> None:
        if self.net.healed:
            return
        self.faults["partition"] += 1
        self._partition(groups)
        self._at(self.now_ms + duration_ms, self.network.heal_all)

    async def _crash(self, nid: NodeId, downtime_ms: int) -> None:
        member = self.members[nid]
        if self.net.healed or not member.alive:
            return
        member.alive = False
        self.faults["crash"] += 1
        await member.p2p.stop()  # nothing more leaves or arrives: a crash, not a goodbye
        await member.node.stop()
        self._at(self.now_ms + downtime_ms, lambda: self._spawn(self._restart(nid)))

    async def _restart(self, nid: NodeId) -> None:
        old = self.members[nid]
        if old.alive:
            return
        new = self.members[nid] = self._member(nid, old.peer_id, old)
        new.ledger = old.ledger
        await self._start(new)

    async def _heal(self) -> None:
        self.net.heal()
        self.network.heal_all()
        for state in self.fault_states.values():  # byzantine modes stay to the end
            state.set_links("*", LinkRule())
        for nid in self.ids:
            if not self.members[nid].alive:
                await self._restart(nid)
        self._resubmit()

    # -- the run ------------------------------------------------------------------------

    def _halted(self) -> None:
        for member in self.members.values():
            if not member.alive:
                continue
            task = member.node.driver_task
            if task.done() and not task.cancelled() and task.exception() is not None:
                shard, index = member.nid
                self.checker.violations.append(
                    f"node {shard}/{index}: halted: {task.exception()!r}")
                member.alive = False

    def _quiescent(self) -> bool:
        if not self.net.healed or any(not m.alive for m in self.members.values()):
            return False
        tips: dict[int, set[tuple[int, bytes]]] = {}
        for member in self.members.values():
            ledger = member.node.running.ledger
            tips.setdefault(member.nid[0], set()).add((ledger.height, ledger.state.root))
        if any(len(t) != 1 for t in tips.values()) or self._pending():
            return False
        leaders = self._leaders()
        return all(get_out_seq(leaders[src].state, dst) == get_in_cursor(leaders[dst].state, src)
                   for src in leaders for dst in leaders if src != dst)

    async def _main(self) -> None:
        c = self.cfg
        self.t0 = asyncio.get_running_loop().time()
        self.members = {nid: self._member(nid, self.peers[nid], None) for nid in self.ids}
        for member in self.members.values():
            await self._start(member)
        for i, item in enumerate(self.load):
            self._at(item.arrival_ms, lambda i=i: self._spawn(self._submit(i)))
        self.net.schedule_faults(self.ids, c.fault_ms)
        self._pump()
        for shard, index, at_ms, down_ms in c.crashes:
            self._at(at_ms, self._on_fault, "crash", ((shard, index), down_ms))
        for at_ms, duration_ms, groups in c.partitions:
            self._at(at_ms, self._explicit_partition, duration_ms, list(groups))
        for link in c.link_faults:
            self._at(link.at_ms, self._link_fault, link, True)
            self._at(link.at_ms + link.duration_ms, self._link_fault, link, False)
        end_ms = c.fault_ms + c.heal_ms_max
        while self.now_ms < end_ms and self.checker.ok:
            await asyncio.sleep(POLL_MS / 1000)
            self._halted()
            if self._quiescent():
                break
        if self.checker.ok:
            await self._check_end()
        self.sim_ms = self.now_ms
        for member in self.members.values():
            if member.alive:
                member.alive = False
                await member.node.stop()

    async def _check_end(self) -> None:
        honest = {s: [(f"{m.nid[0]}/{m.nid[1]}", m.node.running.ledger)
                      for m in self.members.values() if m.nid[0] == s]
                  for s in range(self.cfg.shards)}
        counts: Counter[tuple[int, bytes]] = Counter((item.shard, item.sender)
                                                     for item in self.load)
        self.checker.check_final(honest, [(s, sender, n) for (s, sender), n
                                          in sorted(counts.items())])
        for i, item in enumerate(self.load):
            times = self.committed_txs[item.digest]
            if times != 1 and (i in self.accepted or times > 1):
                self.checker.violations.append(
                    f"tx {item.digest.hex()[:12]} (shard {item.shard}, nonce {item.nonce}) "
                    f"committed {times} times")
        # The nodes' own audit (GET /v1/audit), one honest node per shard, against
        # genesis supply.
        totals = {}
        for shard in range(self.cfg.shards):
            member = next(m for m in self.members.values()
                          if m.nid[0] == shard and m.nid not in self.byzantine_nodes)
            totals[shard] = get_shard_totals_from_json(await member.node.service.audit())
        report = compute_totals_audit(totals, self.world.supply)
        if not report.ok or not report.idle:
            self.checker.violations.append(f"audit: {report}")

    def run(self) -> NetworkSimResult:
        started = time.perf_counter()
        with captured_logs(self.logs, self.events, self._observe):
            try:
                run_virtual(self._main())
            except SimulationStuck as exc:
                self.checker.violations.append(f"stuck: {exc}")
        violations = self.checker.all_violations()
        view_changes = sum(m.view_changes + m.node.running.driver.view_changes
                           for m in self.members.values())
        leaders = self._leaders()
        tail = [] if not violations else [
            f"{e.get('t_ms', 0)} {e.get('node', '')} {e.get('level')} {e.get('event')} "
            + " ".join(f"{k}={v}" for k, v in e.items()
                       if k not in ("t_ms", "node", "level", "event"))[:200]
            for e in self.logs if e.get("level") in ("warning", "error")][-30:]
        return NetworkSimResult(
            seed=self.cfg.seed, ok=not violations, violations=violations,
            faults=self.faults, heights=tuple(leaders[s].height for s in sorted(leaders)),
            blocks=sum(len(c) - 1 for c in self.checker.cursors.values()),
            commits=self.commits, txs=sum(self.committed_txs.values()),
            receipts=self.checker.applied, view_changes=view_changes,
            sim_ms=self.sim_ms, wall_s=time.perf_counter() - started,
            trace=self.trace.hexdigest(),
            repro=f"{self.cfg.command} {self.cfg.cli_args()}", log_tail=tail,
            byzantine_acts=sum((m.byzantine_acts + self._acts_of(m)
                                for m in self.members.values()), Counter()),
            events=self.events,
            max_view=max((m.node.running.driver.replica.view
                          for m in self.members.values()), default=0),
            invalid_sent=self.invalid_sent, bad_refusals=self.bad_refusals,
            refused=self.refused, relay=self.relay)


def run_network_seed(seed: int, **overrides: Any) -> NetworkSimResult:
    return NetworkSimulation(NetworkSimConfig(seed=seed, **overrides)).run()
