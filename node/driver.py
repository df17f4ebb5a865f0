"""The consensus driver: feeds the replica events and carries out its actions.

The only place that awaits around consensus. Follows the ordering contract of
``consensus.actions``: a ``Persist`` is durable before the sends after it, and
a ``CommitBlock`` is written together with that ``Persist`` in one storage
transaction. Ledger work runs on the ledger thread, never on the loop.

Storage may overlap the next height (issue 16, ``consensus.overlap_storage``; off by
default: no gain measured, see docs/BENCHMARKS.md "Pipelining in the node"):
a ``CommitBlock`` is applied to the ledger at once (the next height executes on it),
while its storage transaction (block,
certificate, state writes and the ``Persist`` of the same step) and then the
announcements (``on_committed``: API status, events, receipts to relay, gossip) run on
one FIFO writer behind the previous ones, so blocks reach the store in height order and
nothing reports a transaction committed before it is durable. The sends of a step still
wait for its ``Persist`` whenever that ``Persist`` records a vote, a view or a prepared
certificate (``needs_durable``); a ``Persist`` that only records a commit does not hold
back the sends (a crash before it is stored restarts at the height below and syncs the
block, whose certificate exists, from peers). At most one commit's write is pending when
the next commit is applied (back-pressure). A failed write halts the driver.

Two checks of untrusted input live here rather than in the pure core because they
need the node's own state: the inbox holds at most ``consensus.inbox_bytes_max`` bytes
of peer messages (beyond it a message is dropped as ``inbox_over_budget``), and a
fresh proposal's header time may be at most ``consensus.proposal_time_ahead_max_ms``
past this node's wall clock (docs/PROTOCOL.md section 3, "Header rules"); a certified
block (sync, catch-up) is never judged by the clock.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from consensus.actions import (
    Action,
    Broadcast,
    CommitBlock,
    Dropped,
    ExecuteBlock,
    Persist,
    RequestProposal,
    RequestSync,
    Send,
    SetTimer,
    ViewChangeStarted,
    ViewInstalled,
)
from consensus.batching import batch_due
from consensus.certificate import CommitCertificate
from consensus.events import (
    BlockExecuted,
    Event,
    MessageReceived,
    ProposalReady,
    Tick,
)
from consensus.kernel.codec import encode
from consensus.replica import Replica
from consensus.state import PersistentState
from node.config import NodeConfig
from node.drops import DropLog
from node.ledger_store import compute_block_commit
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.parts import Clock
from node.store import StoreAPI
from node.sync import SyncClient
from node.wire import CHANNEL_CONSENSUS
from sharding.executor import Rejected
from sharding.inbound import InboundPool
from sharding.ledger import Committed, Ledger, Proposal
from sharding.records import get_in_cursor, get_nonce
from sharding.state import StateReader

META_REPLICA = "replica"
EVENT_QUEUE_MAX = 100_000
PENDING_REFRESH_MS = 100
# An inbound receipt in a block with its share of evidence: the receipt (~200 bytes), its
# Merkle path (34 bytes a level) and at worst a source header with its certificate.
INBOUND_RECEIPT_BYTES_MAX = 2048


def needs_durable(before: PersistentState | None, after: PersistentState) -> bool:
    """Whether the sends after a ``Persist`` of ``after`` (the previous one ``before``)
    must wait until it is durable: it records a vote, a view or a prepared certificate
    the restarted replica must not contradict. Only commit fields changed (committed
    height, hash, certificate, checkpoint, a prepared certificate dropped by the commit):
    losing them in a crash loses nothing signed, the store restarts below and syncs."""
    if before is None:
        return True
    if (before.view, before.vote_floor, before.last_pre_prepare, before.last_prepare,
            before.last_commit) != (after.view, after.vote_floor, after.last_pre_prepare,
                                    after.last_prepare, after.last_commit):
        return True
    return after.prepared is not None and (after.prepared, after.prepared_payload) != (
        before.prepared, before.prepared_payload)


class ConsensusDriver:
    def __init__(
        self,
        *,
        config: NodeConfig,
        replica: Replica,
        ledger: Ledger,
        store: StoreAPI,
        mempool: Mempool,
        metrics: NodeMetrics,
        log: Any,
        send: Callable[[int, int, bytes], bool],
        syncer: SyncClient,
        on_committed: Callable[[Committed, CommitCertificate], None],
        on_applied: Callable[[Committed], None] | None = None,
        on_rejected: Callable[[list[Rejected]], None],
        ledger_pool: Executor,
        inbound: InboundPool,
        clock: Clock,
        drop: DropLog,
    ) -> None:
        self.config = config
        self.replica = replica
        self.ledger = ledger
        self.store = store
        self.mempool = mempool
        self.metrics = metrics
        self.log = log
        self._send = send
        self._syncer = syncer
        self._on_committed = on_committed
        self._on_applied = on_applied
        self._on_rejected = on_rejected
        self._pool = ledger_pool
        self.inbound = inbound
        self.clock = clock
        self.drop = drop
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE_MAX)
        self.inbox_bytes = 0  # of the peer messages waiting in _inbox
        self._local: deque[Event] = deque()
        self._deadline_ms = self.clock.monotonic_ms()
        self._proposal_wanted: tuple[int, int] | None = None
        self._last_block_ms = self.clock.monotonic_ms()
        self._proposed_height = 0  # the height of this node's last proposal
        self._proposing = False
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.view_changes = 0
        self._pending_checked_ms = -PENDING_REFRESH_MS
        self._pending_oldest: int | None = None
        # When _maybe_propose last found nothing it could propose although the interval
        # had passed (say, only transactions behind a nonce gap): until news arrives
        # (an event wakes the loop), the interval is no reason to wake.
        self._idle_since_ms = -1
        # The storage writer (FIFO): the last write queued, the last commit's write,
        # the last Persist queued (what needs_durable compares with), a failed write.
        self._write_tail: asyncio.Task[None] | None = None
        self._commit_write: asyncio.Task[None] | None = None
        self._persisted: PersistentState | None = None
        self._write_error: BaseException | None = None
        self.writes_pending = 0

    # -- inputs -------------------------------------------------------------------

    def deliver(self, data: bytes, sender_index: int | None) -> None:
        """A consensus message off the wire (called on the loop by the p2p handler).
        Bounded by count (``EVENT_QUEUE_MAX``) and by bytes (``inbox_bytes_max``)."""
        size = len(data)
        budget = self.config.consensus.inbox_bytes_max
        if self.inbox_bytes + size > budget:
            self.drop("pbft", "inbox_over_budget", sender=sender_index, bytes=size,
                      inbox_bytes=self.inbox_bytes, inbox_bytes_max=budget)
            return
        try:
            self._inbox.put_nowait(MessageReceived(data, sender_index))
        except asyncio.QueueFull:
            self.drop("pbft", "inbox_full", sender=sender_index)
            return
        self.inbox_bytes += size

    def _taken(self, event: Event) -> Event:
        """An event just taken from the inbox: its bytes leave the budget."""
        if isinstance(event, MessageReceived):
            self.inbox_bytes -= len(event.data)
        return event

    def wake(self) -> None:
        """Something changed in the mempool: re-check the batch policy soon."""
        if self._inbox.empty():
            self._inbox.put_nowait(Tick(self.clock.monotonic_ms(), self._oldest_pending()))

    async def stop(self) -> None:
        self._stopping = True
        self._inbox.put_nowait(Tick(self.clock.monotonic_ms()))
        for task in list(self._tasks):
            task.cancel()

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        await self._step(Tick(self.clock.monotonic_ms(), self._oldest_pending()))
        while not self._stopping:
            timeout_s = max(0.0, (self._next_wake_ms() - self.clock.monotonic_ms()) / 1000)
            try:
                event = self._taken(await asyncio.wait_for(self._inbox.get(), timeout_s))
            except TimeoutError:
                event = Tick(self.clock.monotonic_ms(), self._oldest_pending())
            self._check_writes()
            if self._stopping:
                break
            await self._step(event)
            # Drain what arrived meanwhile before the next timer check.
            for _ in range(256):
                if self._inbox.empty() or self._stopping:
                    break
                await self._step(self._taken(self._inbox.get_nowait()))
            if self.clock.monotonic_ms() >= self._deadline_ms:
                await self._step(Tick(self.clock.monotonic_ms(), self._oldest_pending()))
            await self._maybe_propose()
        await self.flush_writes()

    # -- the storage writer --------------------------------------------------------

    def _queue_write(self, write: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``write`` after every write queued before it (blocks in height order)."""
        previous = self._write_tail

        async def run() -> None:
            if previous is not None:
                await previous
            await write()

        task = asyncio.ensure_future(run())
        self.writes_pending += 1
        task.add_done_callback(self._write_done)
        self._write_tail = task
        return task

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self.writes_pending -= 1
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._write_error is None:
            self._write_error = error
            if self._inbox.empty():  # the loop raises it at its next turn
                self._inbox.put_nowait(Tick(self.clock.monotonic_ms()))

    def _check_writes(self) -> None:
        if self._write_error is not None:
            raise self._write_error

    async def flush_writes(self) -> None:
        """Wait until every queued write is stored (raises a failed write's error)."""
        tail = self._write_tail
        if tail is not None:
            await asyncio.shield(tail)
        self._check_writes()

    def _persist(self, state: PersistentState) -> asyncio.Task[None]:
        metadata = {META_REPLICA: encode(state)}
        self._persisted = state
        return self._queue_write(lambda: self.store.put_metadata(metadata))

    def _next_wake_ms(self) -> int:
        wake = self._deadline_ms
        due = self._last_block_ms + self.config.consensus.block_interval_ms
        if self._proposal_wanted is not None and self._idle_since_ms < due and (
                len(self.mempool) or self._inbound_ready()):
            wake = min(wake, due)
        return wake

    def _inbound_ready(self) -> bool:
        return self.inbound.ready(self.ledger.in_cursor)

    def _oldest_pending(self) -> int | None:
        """The oldest work waiting: a runnable transaction or an applicable inbound
        receipt (PROTOCOL.md section 4: both start a view change when left too long)."""
        # O(senders) with a state read each: recomputed at most every
        # PENDING_REFRESH_MS, far below the request timeout it feeds.
        now = self.clock.monotonic_ms()
        if now - self._pending_checked_ms >= PENDING_REFRESH_MS:
            self._pending_checked_ms = now
            waiting = [self.mempool.oldest_ready_arrival_ms(),
                       self.inbound.oldest_ready_ms(self.ledger.in_cursor)]
            self._pending_oldest = min((t for t in waiting if t is not None), default=None)
        return self._pending_oldest

    async def _step(self, event: Event) -> None:
        self._local.append(event)
        while self._local:
            actions = self.replica.step(self._local.popleft())
            await self._carry_out(actions)

    # -- actions ------------------------------------------------------------------

    async def _carry_out(self, actions: Sequence[Action]) -> None:
        persist = next((a for a in actions if isinstance(a, Persist)), None)
        commits = [a for a in actions if isinstance(a, CommitBlock)]
        persisted = False
        durable: asyncio.Task[None] | None = None  # what the sends below must wait for
        for action in actions:
            if isinstance(action, Send | Broadcast) and durable is not None:
                await asyncio.shield(durable)
                self._check_writes()
                durable = None
            if isinstance(action, ExecuteBlock):
                await self._execute(action)
            elif isinstance(action, CommitBlock):
                last = action is commits[-1]
                bundled = persist if last else None
                before = self._persisted
                write = await self._commit(action, bundled)
                if not self.config.consensus.overlap_storage:
                    await asyncio.shield(write)  # stored before anything else (default)
                    self._check_writes()
                if bundled is not None:
                    persisted = True
                    if needs_durable(before, bundled.state):
                        durable = write
            elif isinstance(action, Persist):
                if not persisted:
                    durable = self._persist(action.state)
                    persisted = True
            elif isinstance(action, Send):
                self._send(action.to_index, CHANNEL_CONSENSUS, action.data)
            elif isinstance(action, Broadcast):
                for index in range(len(self.replica.cfg.validators)):
                    if index != self.replica.me:
                        self._send(index, CHANNEL_CONSENSUS, action.data)
            elif isinstance(action, SetTimer):
                self._deadline_ms = action.deadline_ms
            elif isinstance(action, RequestProposal):
                self._proposal_wanted = (action.height, action.view)
            elif isinstance(action, RequestSync):
                self._spawn(self._sync(action))
            elif isinstance(action, Dropped):
                self.drop("pbft", action.reason, detail=action.detail[:200],
                           sender=action.sender)
            elif isinstance(action, ViewChangeStarted):
                self.view_changes += 1
                self.metrics.view_changes.inc()
                self.log.warning("pbft.view_change", new_view=action.new_view,
                                 reason=action.reason, height=self.ledger.height)
            elif isinstance(action, ViewInstalled):
                self.metrics.view.set(action.view)
                self.metrics.is_primary.set(int(action.primary == self.replica.me))
                self.log.info("pbft.new_view", view=action.view, primary=action.primary,
                              height=self.ledger.height)

    async def _execute(self, action: ExecuteBlock) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        # A fresh proposal's time is checked against our wall clock; a certified block
        # (synced, or committed while we waited) only by the deterministic rules.
        fresh = not self.replica.certified(action.height, action.block_hash)
        reason = await loop.run_in_executor(self._pool, functools.partial(
            self.ledger.execute, action.payload, action.block_hash, action.height, action.view,
            now_ms=self.clock.wall_ms() if fresh else None,
            time_ahead_max_ms=self.config.consensus.proposal_time_ahead_max_ms,
            parent=action.parent,
        ))
        self.metrics.block_execution.observe(time.perf_counter() - started)
        if reason:
            # The reason's first word is its type (bad_certificate, receipt_gap, ...).
            self.metrics.blocks_rejected.labels(reason=reason.split(":", 1)[0]).inc()
            self.log.warning("block.rejected", height=action.height, view=action.view,
                             block=action.block_hash.hex(), reason=reason)
        self._local.append(BlockExecuted(action.view, action.height, action.block_hash,
                                         not reason, reason))

    async def _commit(self, action: CommitBlock, persist: Persist | None) -> asyncio.Task[None]:
        """Apply the block to the ledger now; queue its storage (with ``persist``) and
        then its announcements; return the write."""
        loop = asyncio.get_running_loop()
        committed: Committed = await loop.run_in_executor(
            self._pool, self.ledger.commit, action.payload, action.block_hash, action.height
        )
        if self._on_applied is not None:
            self._on_applied(committed)
        # The batch interval counts from this node's last proposal when it proposed the
        # block just committed (issue 16: a round longer than the interval is followed
        # by the next proposal at once, not by another interval of idle waiting, so the
        # cycle is max(round, interval), not round + interval); from the commit of a
        # block proposed by another primary otherwise (after a view change).
        if action.height != self._proposed_height:
            self._last_block_ms = self.clock.monotonic_ms()
        if self._proposal_wanted is not None and self._proposal_wanted[0] <= action.height:
            self._proposal_wanted = None
        # Back-pressure: at most one commit's write waits while the next one applies.
        previous = self._commit_write
        if previous is not None and not previous.done():
            await asyncio.shield(previous)
        self._check_writes()
        metadata = {META_REPLICA: encode(persist.state)} if persist is not None else {}
        if persist is not None:
            self._persisted = persist.state
        certificate = action.certificate

        async def store() -> None:
            await self.store.commit_block(compute_block_commit(
                committed.block, committed.result, encode(certificate), metadata))
            self._on_committed(committed, certificate)

        write = self._commit_write = self._queue_write(store)
        return write

    # -- proposing ------------------------------------------------------------------

    async def _maybe_propose(self) -> None:
        wanted = self._proposal_wanted
        if wanted is None or self._proposing or self._stopping:
            return
        if self.replica.wants_proposal() != wanted:
            self._proposal_wanted = None
            return
        consensus = self.config.consensus
        waited_ms = self.clock.monotonic_ms() - self._last_block_ms
        inbound_ready = self._inbound_ready()
        if not batch_due(len(self.mempool), inbound_ready, consensus.block_txs_max,
                         waited_ms, consensus.block_interval_ms):
            return
        # Inbound receipts and their evidence ride in the same block: leave them room.
        tx_bytes_max = consensus.block_bytes_max - min(
            consensus.block_inbound_max * INBOUND_RECEIPT_BYTES_MAX, consensus.block_bytes_max // 2)
        height, view = wanted
        # The block to build on: the committed tip, or (pipelining) our own block in
        # flight at height - 1; nonces and inbound cursors are read on it, so the
        # transactions and receipts of the blocks in flight are not offered again.
        parent = self.replica.chain_parent(height)
        if parent is None:
            return
        loop = asyncio.get_running_loop()
        on: StateReader | None = self.ledger.state
        if parent != self.ledger.tip_hash:
            on = await loop.run_in_executor(self._pool, self.ledger.state_on, parent)
        if on is None or self.replica.wants_proposal() != wanted:
            return
        state: StateReader = on

        def nonce_of(address: bytes) -> int:
            return get_nonce(state, address)

        def cursor_of(src_shard: int) -> int:
            return get_in_cursor(state, src_shard)

        ready = self.mempool.ready(consensus.block_txs_max, tx_bytes_max, nonce_of)
        if not batch_due(len(ready), inbound_ready, consensus.block_txs_max,
                         waited_ms, consensus.block_interval_ms):
            if waited_ms >= consensus.block_interval_ms:
                self._idle_since_ms = self.clock.monotonic_ms()
            return
        inbound = self.inbound.select(cursor_of, consensus.block_inbound_max)
        if not ready and not inbound:
            # (Pipelining: what is pending is all in the blocks in flight.) Until news
            # arrives, the interval is no reason to wake.
            self._idle_since_ms = self.clock.monotonic_ms()
            return
        self._proposing = True
        try:
            proposal: Proposal = await loop.run_in_executor(
                self._pool, lambda: self.ledger.propose(
                    [item.tx for item in ready], inbound, height=height, view=view,
                    tx_hashes=[item.tx_hash for item in ready],
                    # The ledger makes it max(tip time + 1, this): times increase
                    # even if our clock steps back.
                    time_ms=self.clock.wall_ms(), proposer=self.replica.me,
                    txs_max=consensus.block_txs_max, parent=parent,
                ))
        finally:
            self._proposing = False
        if proposal.rejected:
            self._on_rejected(proposal.rejected)
        if proposal.inbound_refused:
            self.metrics.receipts_refused.labels(src="?", reason="unapplicable").inc(len(inbound))
            self.log.error("receipt.refused", reason="unapplicable",
                           detail=proposal.inbound_refused[:200], height=height)
        self.log.info("block.proposed", height=height, view=view,
                      block=proposal.block_hash.hex(), txs_count=len(proposal.block.txs),
                      on_tip=parent == self.ledger.tip_hash,
                      inbound=len(proposal.block.inbound),
                      txs=[o.tx_hash.hex() for o in proposal.result.outcomes])
        self._proposal_wanted = None
        # The batch interval counts from the last block proposed (or committed, when
        # another primary proposed it): the next proposal does not wait an interval
        # after this one's commit, nor, with pipelining, for this one's commit at all.
        self._last_block_ms = self.clock.monotonic_ms()
        self._proposed_height = height
        await self._step(ProposalReady(height, view, proposal.payload, proposal.block_hash))

    # -- block sync (node/sync.py) ---------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync(self, action: RequestSync) -> None:
        result = await self._syncer.fetch(action)
        if result is not None:
            await self._inbox.put(result)
