"""The cross-shard relay of one node (docs/PROTOCOL.md section 5, "Relay and finality").

- **Push.** After a block of this shard commits, its f+1 relayers (the proposer and
  the next f validators by index) each send the per-destination bundle to every node
  of the destination shard over a p2p stream (``CHANNEL_RECEIPTS``). Streams, not
  gossip: a gossiped message costs 16-50 ms of CPU across the network, a stream write
  about 0.25 ms; f+1 relayers include an honest one, with (f+1) x n messages per
  bundle instead of n x n.
- **Verify and pool.** A bundle from anyone is decoded and verified off the event
  loop (certificate against the source shard's genesis validators, header hash,
  every proof); refusals are logged (``receipt.refused``) and counted by reason.
  Proven receipts enter the ``InboundPool``.
- **Pull.** A gap in the pool, or receipts a source shard announced (``out_seqs`` of
  its block announcements) still missing at the next poll, when a push would long
  have arrived, or a quiet period: ask one node of the source shard (rotating) for
  the channel's receipts after what we hold. The source answers with bundles built from its
  committed blocks: the same answer serves ``GET /v1/receipts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consensus.certificate import fault_tolerance
from consensus.kernel.codec import decode, encode
from consensus.kernel.errors import DecodeError, ShardnetError
from consensus.kernel.limits import BUNDLE_BYTES_MAX
from node.drops import DropLog
from node.metrics import NodeMetrics
from node.parts import Clock
from node.store import StoreAPI
from node.wire import CHANNEL_RECEIPTS, ReceiptsRequest, ReceiptsResponse
from sharding.block import decode_block
from sharding.crossshard import (
    InvalidBundle,
    ProvenReceipt,
    ReceiptBundle,
    compute_bundle_slice,
    compute_bundles,
    decode_bundle,
    verify_bundle,
)
from sharding.inbound import AddResult, InboundPool
from sharding.ledger import Committed, Ledger
from sharding.receipts import Receipt
from sharding.records import get_out_seq

if TYPE_CHECKING:
    from node.faults.byzantine import Byzantine

RECEIPTS_RESPONSE_BYTES_MAX = 64 * 1024 * 1024
RECEIPT_BYTES_MAX = 4096
BUNDLE_OVERHEAD_BYTES = 64 * 1024  # header, certificate and framing of one bundle
VERIFYING_MAX = 64  # pushed bundles waiting for the relay thread


@dataclass(frozen=True, slots=True)
class RelaySettings:
    poll_interval_ms: int
    idle_poll_ms: int
    request_timeout_ms: int
    bundle_receipts_max: int
    serve_receipts_max: int
    frame_bytes_max: int


Send = Callable[[int, int, int, bytes], bool]  # (shard, index, channel, data) -> queued
Request = Callable[[int, int, bytes, float], Awaitable[bytes]]  # (shard, index, data, timeout)


class ReceiptRelay:
    def __init__(self, *, ledger: Ledger, index: int, pool: InboundPool, store: StoreAPI,
                 metrics: NodeMetrics, log: Any, send: Send, request: Request,
                 verify_pool: Executor, settings: RelaySettings,
                 shard_tips: dict[int, int], on_pooled: Callable[[], None], clock: Clock,
                 drop: DropLog) -> None:
        self.ledger = ledger
        self.shard = ledger.shard
        self.index = index
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.log = log
        self._send = send
        self._request = request
        self._verify_pool = verify_pool
        self.settings = settings
        self.shard_tips = shard_tips
        self._on_pooled = on_pooled
        self.clock = clock
        self.drop = drop
        self._sizes = [len(keys) for keys in ledger.validators.keys]
        self._sources = [s for s in range(len(self._sizes)) if s != self.shard]
        self._next_peer = {src: self.index % self._sizes[src] for src in self._sources}
        self._announced = {src: 0 for src in self._sources}  # out_seq hints, to us
        self._owed = {src: 0 for src in self._sources}  # the hint seen at the last poll
        self._polled_ms = {src: 0 for src in self._sources}
        self._out_seq_hints = {src: 0 for src in self._sources}  # from pull answers
        self._tasks: set[asyncio.Task[Any]] = set()
        self._verifying = 0
        # A byzantine mode for tests (node/faults/byzantine.py); None: honest.
        self.faults: Byzantine | None = None

    # -- push ---------------------------------------------------------------------------

    def is_relayer(self, proposer: int) -> bool:
        n = self._sizes[self.shard]
        return any((proposer + k) % n == self.index for k in range(fault_tolerance(n) + 1))

    def on_committed(self, committed: Committed, certificate: bytes) -> None:
        """Apply-side bookkeeping of a commit, then push its bundles if we relay it."""
        self._count_applied(committed)
        receipts = committed.result.receipts
        if self.faults is not None and self.faults.relays_byzantine:
            # Any node may push a bundle: a byzantine one does, whoever proposed.
            self._spawn(self._push_byzantine(self.faults, committed, certificate))
            return
        if receipts and self.is_relayer(committed.block.header.proposer):
            self._spawn(self._push(committed, certificate))

    async def _push(self, committed: Committed, certificate: bytes) -> None:
        loop = asyncio.get_running_loop()
        header = committed.block.header
        bundles = await loop.run_in_executor(
            self._verify_pool, self._encode_bundles,
            compute_bundles(header, certificate, committed.result.receipts))
        for dst, (parts, receipts) in bundles.items():
            sent = 0
            for data in parts:
                for node in range(self._sizes[dst]):
                    sent += self._send(dst, node, CHANNEL_RECEIPTS, data)
            self.metrics.receipts_relayed.labels(dst=str(dst)).inc(len(receipts))
            self.log.info("receipt.relayed", dst_shard=dst, height=header.height,
                          first_seq=receipts[0].seq, last_seq=receipts[-1].seq,
                          count=len(receipts), messages=sent,
                          origins=[r.origin.hex() for r in receipts])

    async def _push_byzantine(self, faults: Byzantine, committed: Committed,
                              certificate: bytes) -> None:
        bundles = compute_bundles(committed.block.header, certificate,
                                  committed.result.receipts)
        for dst, data in faults.relay_out(bundles):
            for node in range(self._sizes[dst]):
                self._send(dst, node, CHANNEL_RECEIPTS, data)

    def _encode_bundles(self, bundles: dict[int, ReceiptBundle]
                        ) -> dict[int, tuple[list[bytes], list[Receipt]]]:
        """Each destination's bundle, split so every part fits a p2p frame."""
        out = {}
        for dst, bundle in bundles.items():
            step = self.settings.bundle_receipts_max
            parts = []
            for start in range(0, len(bundle.receipts), step):
                chunk = bundle.receipts[start:start + step]
                parts.append(encode(compute_bundle_slice(bundle, chunk[0].seq, chunk[-1].seq)))
            out[dst] = (parts, list(bundle.receipts))
        return out

    # -- verify and pool ----------------------------------------------------------------

    def on_bundle(self, peer: str, data: bytes) -> None:
        """A bundle pushed by a relayer (any node may send one: only its proof counts).
        At most ``VERIFYING_MAX`` bundles wait for verification; past that a pushed
        bundle is dropped (counted): the pull path fetches whatever it carried."""
        if self._verifying >= VERIFYING_MAX:
            self.metrics.receipts_refused.labels(src="?", reason="busy").inc()
            return
        self._spawn(self._receive([data], peer, via="push"))

    def _verify(self, blobs: list[bytes]) -> list[tuple[list[ProvenReceipt], ShardnetError | None,
                                                         int]]:
        """Decode and verify bundles (on the verify thread): per bundle, its proven
        receipts or the refusal, and the source shard when known (-1 otherwise)."""
        out: list[tuple[list[ProvenReceipt], ShardnetError | None, int]] = []
        for data in blobs:
            try:
                bundle = decode_bundle(data, BUNDLE_BYTES_MAX)
            except DecodeError as exc:
                out.append(([], exc, -1))
                continue
            src = bundle.source.header.shard
            try:
                out.append((verify_bundle(bundle, self.shard, self.ledger.validators,
                                          self.ledger.verified_sources), None, src))
            except InvalidBundle as exc:
                out.append(([], exc, src))
            except Exception as exc:  # an untrusted payload can only be invalid
                out.append(([], InvalidBundle(f"{type(exc).__name__}: {exc}",
                                              reason="invalid_bundle"), src))
        return out

    async def _receive(self, blobs: list[bytes], peer: str, via: str) -> AddResult:
        loop = asyncio.get_running_loop()
        self._verifying += 1
        try:
            verified = await loop.run_in_executor(self._verify_pool, self._verify, blobs)
        finally:
            self._verifying -= 1
        total = AddResult()
        now = self.clock.wall_ms()
        arrived = self.clock.monotonic_ms()  # the replica's clock, for liveness
        for proven, error, src in verified:
            if error is not None:
                self.metrics.receipts_refused.labels(src=str(src), reason=error.reason).inc()
                self.log.warning("receipt.refused", src_shard=src, reason=error.reason,
                                 detail=error.detail[:200], peer=peer, via=via)
                continue
            result = self.pool.add(proven, self.ledger.in_cursor, arrived)
            for outcome in ("added", "duplicate", "stale", "full"):
                count = getattr(result, outcome)
                if count:
                    self.metrics.receipts_received.labels(src=str(src), result=outcome).inc(count)
                setattr(total, outcome, getattr(total, outcome) + count)
            if result.added:
                header = proven[0].source.header
                self.metrics.receipt_relay_latency.labels(src=str(src)).observe(
                    max(0, now - header.time_ms) / 1000)
                self.log.info("receipt.received", src_shard=src, height=header.height,
                              first_seq=proven[0].receipt.seq, last_seq=proven[-1].receipt.seq,
                              added=result.added, via=via,
                              origins=[p.receipt.origin.hex() for p in proven])
        if total.added:
            self._update_in_flight()
            self._on_pooled()
        return total

    # -- apply-side bookkeeping ----------------------------------------------------------

    def _count_applied(self, committed: Committed) -> None:
        inbound = committed.block.inbound
        if inbound:
            by_src: dict[int, list[Receipt]] = {}
            for receipt in inbound:
                by_src.setdefault(receipt.src_shard, []).append(receipt)
            for src, receipts in by_src.items():
                self.metrics.receipts_applied.labels(src=str(src)).inc(len(receipts))
                self.log.info("receipt.applied", src_shard=src, height=committed.height,
                              first_seq=receipts[0].seq, last_seq=receipts[-1].seq,
                              count=len(receipts), origins=[r.origin.hex() for r in receipts])
        self.pool.prune(self.ledger.in_cursor)
        self._update_in_flight()

    def _update_in_flight(self) -> None:
        """Receipts of each source known to exist (proven here, or the source's own
        word in a pull answer) and not applied yet."""
        for src in self._sources:
            known = max(self.pool.known_seq(src), self._out_seq_hints[src])
            self.metrics.receipts_in_flight.labels(src=str(src)).set(
                max(0, known - self.ledger.in_cursor(src)))

    # -- pull -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The pull loop, for the node's lifetime."""
        interval_s = self.settings.poll_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)  # a polling period, not synchronisation
            for src in self._sources:
                wanted = self._wanted(src)
                if wanted is not None:
                    await self._pull(src, *wanted)

    def note_announced(self, src: int, out_seq: int) -> None:
        """A certified announcement of ``src`` says its channel to us reached
        ``out_seq`` (the sender's hint: too high costs a pull, too low waits for the
        idle poll, as a withheld announcement would)."""
        if src in self._announced and out_seq > self._announced[src]:
            self._announced[src] = out_seq

    def _wanted(self, src: int) -> tuple[int, int, bool] | None:
        """(first, last, is_gap) to ask ``src`` for now, or None. Announced receipts
        are owed a pull only when still missing one poll after their announcement (a
        push arrives within tens of ms): each poll remembers the hint it saw."""
        cursor = self.ledger.in_cursor(src)
        gap = self.pool.get_gaps(self.ledger.in_cursor).get(src)
        owed, self._owed[src] = self._owed[src], self._announced[src]
        if gap is not None:
            return gap[0], gap[1], True
        now = self.clock.wall_ms()
        missing = owed > max(cursor, self.pool.known_seq(src))
        quiet = now - self._polled_ms[src] >= self.settings.idle_poll_ms
        if not (missing or quiet):
            return None
        first = self.pool.get_run_end(src, cursor) + 1
        return first, first + self.settings.serve_receipts_max - 1, False

    async def _pull(self, src: int, first: int, last: int, is_gap: bool) -> None:
        peer = self._next_peer[src]
        self._next_peer[src] = (peer + 1) % self._sizes[src]
        self._polled_ms[src] = self.clock.wall_ms()
        request = encode(ReceiptsRequest(self.shard, first, last))
        try:
            answer = await self._request(src, peer, request,
                                         self.settings.request_timeout_ms / 1000)
            response = decode(answer, ReceiptsResponse, RECEIPTS_RESPONSE_BYTES_MAX)
        except (ShardnetError, ValueError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            self.drop.count("relay", reason)
            self.log.debug("receipt.pull_failed", src_shard=src, peer_index=peer, reason=reason)
            return
        self._out_seq_hints[src] = response.out_seq
        # An announced hint the source's own answer does not back is dropped: a made-up
        # out_seq cannot keep this node pulling every poll (a later announcement of a
        # real one raises it again).
        self._announced[src] = min(self._announced[src], response.out_seq)
        self._owed[src] = min(self._owed[src], response.out_seq)
        if response.bundles:
            result = await self._receive(response.bundles, f"{src}/{peer}", via="pull")
            if is_gap and result.added:
                self.metrics.receipt_gaps_filled.labels(src=str(src)).inc(result.added)
                self.log.info("receipt.gap_filled", src_shard=src, first_seq=first,
                              last_seq=last, added=result.added, peer_index=peer)
        self._update_in_flight()

    # -- serve ----------------------------------------------------------------------------

    async def serve(self, request: ReceiptsRequest) -> bytes:
        bundles = await self.bundles(request.dst_shard, request.first_seq, request.last_seq)
        out_seq = get_out_seq(self.ledger.state, request.dst_shard)
        return encode(ReceiptsResponse([encode(b) for b in bundles], out_seq))

    async def bundles(self, dst: int, first: int, last: int) -> list[ReceiptBundle]:
        """Bundles with proofs for channel (this shard -> ``dst``) receipts in
        [first, last], from committed blocks, bounded by count and by bytes."""
        if dst == self.shard or not 0 <= dst < len(self._sizes) or last < first:
            return []
        last = min(last, first + self.settings.serve_receipts_max - 1)
        records = await self.store.get_receipts(dst, first, last)
        heights = sorted({r.height for r in records})
        budget = self.settings.frame_bytes_max // 2
        out: list[ReceiptBundle] = []
        loop = asyncio.get_running_loop()
        for height in heights:
            stored = await self.store.get_block(height)
            block_records = await self.store.get_block_receipts(height)
            if stored is None:
                break
            bundle = await loop.run_in_executor(
                self._verify_pool, self._bundle_of, stored.block, stored.certificate,
                [r.receipt for r in block_records], dst, first, last)
            budget -= sum(len(encode(r)) + 32 * len(p.path) + 16
                          for r, p in zip(bundle.receipts, bundle.proofs, strict=True))
            budget -= BUNDLE_OVERHEAD_BYTES
            if out and budget < 0:
                break
            out.append(bundle)
        return out

    @staticmethod
    def _bundle_of(block: bytes, certificate: bytes, receipts: list[bytes], dst: int,
                   first: int, last: int) -> ReceiptBundle:
        header = decode_block(block).header
        decoded = [decode(raw, Receipt, RECEIPT_BYTES_MAX) for raw in receipts]
        bundle = compute_bundles(header, certificate, decoded)[dst]
        return compute_bundle_slice(bundle, first, last)

    # -- tasks ----------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug of ours, not a peer's fault: loud, but the relay keeps running (the
            # pull path retries whatever this task was carrying).
            self.log.error("relay.task_failed", error=repr(task.exception()))

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
