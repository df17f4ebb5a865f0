"""Block sync, both sides: a replica that is behind asks its shard's peers for
committed blocks (``SyncClient``); every node answers such requests from its store
(``SyncServer``, ``serve_sync``). Nothing here trusts the answer.

The asker checks every block of an answer before the replica sees it
(``SyncCheck``): its commit certificate, and that its body is the body the
certified header commits to (header hash, ``tx_root``, ``inbound_root``,
``evidence_root``). A peer that serves anything else (a certified header with a
tampered body, a forged certificate, junk) is counted against that peer
(``sync.peer_served_invalid``, ``shardnet_sync_peer_invalid_total{peer,reason}``),
its whole answer is dropped and the next peer is asked at once; the peer is asked
last for a while (``SYNC_PEER_BACKOFF_MS``, doubling per offence). The replica
therefore only ever executes certified bodies: a bad answer can neither make a
certified block "fail" (which the replica would blame on the block's primary) nor
lead the asker to ask the same peer again. Peers are asked in a random order (the
node's seeded ``rng``: a simulation stays reproducible), hinted holders first, and
a peer whose answer for a height did not get that height committed is asked last
the next time (issue 14, finding 3).

The server reads blocks in small batches (``SYNC_READ_BLOCKS``) up to one frame,
through the store's read path, which never holds what a commit needs
(``Store`` reads blocks on its own connection, docs/STORAGE.md), and serves at
most ``SYNC_SERVES_MAX`` requests at once: beyond that it answers empty, and the
asker goes on to its next peer (issue 14, finding 6).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consensus.actions import RequestSync
from consensus.certificate import CommitCertificate, Verifier, verify_certificate
from consensus.events import SyncedBlock, SyncResult
from consensus.kernel.codec import decode, encode
from consensus.kernel.errors import DecodeError, ShardnetError
from consensus.kernel.limits import CERTIFICATE_BYTES_MAX
from node.config import PRE_PREPARE_OVERHEAD_BYTES
from node.drops import DropLog
from node.metrics import NodeMetrics
from node.parts import Clock
from node.store import StoreAPI
from node.wire import SyncedBlockWire, SyncRequest, SyncResponse
from sharding.block import (
    block_hash,
    compute_evidence_root,
    compute_inbound_root,
    compute_tx_root,
    decode_block,
)

if TYPE_CHECKING:
    from node.faults.byzantine import Byzantine

SYNC_RESPONSE_BYTES_MAX = 64 * 1024 * 1024
SYNC_BLOCK_OVERHEAD_BYTES = 64  # height, block hash and msgpack framing of one synced block
SYNC_REQUEST_TIMEOUT_S = 10.0
SYNC_PEER_BACKOFF_MS = 5_000  # a peer that served an invalid answer is asked last this long
SYNC_PEER_BACKOFF_MAX_MS = 300_000  # doubling per offence up to this
SYNC_SUPPLIERS_KEPT = 4_096  # heights whose supplier the client remembers
SYNC_READ_BLOCKS = 8  # blocks per store read when serving
SYNC_SERVES_MAX = 4  # sync requests served at once; more are answered empty

Request = Callable[[int, bytes, float], Awaitable[bytes]]  # (index, data, timeout_s)


@dataclass(frozen=True, slots=True)
class SyncLimits:
    batch_blocks_max: int  # [consensus] sync_batch_blocks_max
    frame_bytes_max: int  # [p2p] frame_bytes_max


# -- serving -------------------------------------------------------------------------


async def serve_sync(store: StoreAPI, shard: int, limits: SyncLimits,
                     request: SyncRequest) -> bytes:
    """At most ``batch_blocks_max`` blocks from ``request.first``, and no more bytes
    than fit a frame (64 full blocks are ~20 MB): the asker asks again from where
    the answer stops. One block always fits (config check). The store is read
    ``SYNC_READ_BLOCKS`` at a time, so no read is much larger than the answer."""
    if request.shard != shard or request.last < request.first:
        return encode(SyncResponse([]))
    last = min(request.last, request.first + limits.batch_blocks_max - 1)
    budget = limits.frame_bytes_max - PRE_PREPARE_OVERHEAD_BYTES
    answer: list[SyncedBlockWire] = []
    height = request.first
    while height <= last:
        blocks = await store.get_blocks(height, min(last, height + SYNC_READ_BLOCKS - 1))
        for b in blocks:
            budget -= len(b.block) + len(b.certificate) + SYNC_BLOCK_OVERHEAD_BYTES
            if (answer and budget < 0) or b.height != height:
                return encode(SyncResponse(answer))
            answer.append(SyncedBlockWire(b.height, b.block_hash, b.block, b.certificate))
            height += 1
        if not blocks:
            break
    return encode(SyncResponse(answer))


class SyncServer:
    """``serve_sync`` for the node, at most ``serves_max`` at once (each holds up to a
    frame of blocks in memory); a request beyond that is answered empty and counted
    (``sync_serve.dropped`` reason ``busy``)."""

    def __init__(self, store: StoreAPI, shard: int, limits: SyncLimits, drop: DropLog,
                 serves_max: int = SYNC_SERVES_MAX) -> None:
        self.store, self.shard, self.limits, self.drop = store, shard, limits, drop
        self.serves_max = serves_max
        self.serving = 0
        self.faults: Byzantine | None = None  # tamper_sync (node/faults), for tests

    async def serve(self, peer: str, request: SyncRequest) -> bytes:
        if self.serving >= self.serves_max:
            self.drop("sync_serve", "busy", peer=peer, first=request.first)
            return encode(SyncResponse([]))
        self.serving += 1
        try:
            answer = await serve_sync(self.store, self.shard, self.limits, request)
            if self.faults is not None:
                answer = self.faults.sync_answer(answer)
            return answer
        finally:
            self.serving -= 1


# -- checking an answer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    blocks: tuple[SyncedBlock, ...]
    reason: str = ""  # empty: every block checked out
    height: int = 0  # the first height that did not


@dataclass(frozen=True, slots=True)
class SyncCheck:
    """What the asker checks of an answer, every block on its own (pure; runs on the
    node's ledger thread)."""

    chain_id: str
    shard: int
    validators: tuple[bytes, ...]
    verify: Verifier
    block_bytes_max: int

    def __call__(self, answer: bytes, first: int, last: int) -> Verdict:
        try:
            response = decode(answer, SyncResponse, SYNC_RESPONSE_BYTES_MAX)
        except DecodeError as exc:
            return Verdict((), f"malformed: {exc.reason}", first)
        if len(response.blocks) > last - first + 1:
            return Verdict((), "too_many_blocks", first)
        blocks: list[SyncedBlock] = []
        for offset, wire in enumerate(response.blocks):
            height = first + offset
            checked = self.block(wire, height)
            if isinstance(checked, str):
                return Verdict((), checked, height)
            blocks.append(checked)
        return Verdict(tuple(blocks))

    def block(self, wire: SyncedBlockWire, height: int) -> SyncedBlock | str:
        """The block, or why it is not the certified block at ``height``."""
        if wire.height != height:
            return "wrong_height"
        try:
            cert = decode(wire.certificate, CommitCertificate, CERTIFICATE_BYTES_MAX)
        except DecodeError:
            return "malformed_certificate"
        if not verify_certificate(cert, self.chain_id, self.shard, height, wire.block_hash,
                                  self.validators, self.verify):
            return "bad_certificate"
        try:
            block = decode_block(wire.payload, self.block_bytes_max)
        except DecodeError:
            return "malformed_block"
        header = block.header
        if block_hash(header) != wire.block_hash:
            return "block_hash_mismatch"
        if header.shard != self.shard or header.height != height:
            return "wrong_header"
        # The certified header commits to the body: anything else is a tampered body.
        if (header.tx_root != compute_tx_root(block.txs)
                or header.inbound_root != compute_inbound_root(block.inbound)
                or header.evidence_root != compute_evidence_root(block.inbound_proofs,
                                                                 block.source_headers)):
            return "body_mismatch"
        return SyncedBlock(height, wire.payload, wire.block_hash, cert)


# -- asking ------------------------------------------------------------------------------


@dataclass(slots=True)
class PeerRecord:
    invalid: int = 0  # answers that did not check out
    backoff_until_ms: int = 0


@dataclass(slots=True)
class SyncPeers:
    """Whom to ask, in which order: what the client remembers of its peers."""

    rng: random.Random
    records: dict[int, PeerRecord] = field(default_factory=dict)
    suppliers: dict[int, int] = field(default_factory=dict)  # height -> peer that supplied it

    def order(self, hinted: Sequence[int], others: Sequence[int], first: int,
              now_ms: int) -> list[int]:
        """Every peer once, shuffled, then stably sorted: not backing off before backing
        off, not the peer whose answer for ``first`` we had already (we are asked for
        it again: it did not commit) before it, hinted holders before the rest."""
        hint = set(hinted)
        peers = list(dict.fromkeys([*hinted, *others]))
        self.rng.shuffle(peers)
        again = self.suppliers.get(first)

        def rank(peer: int) -> tuple[bool, bool, bool]:
            record = self.records.get(peer)
            backing_off = record is not None and record.backoff_until_ms > now_ms
            return backing_off, peer == again, peer not in hint

        return sorted(peers, key=rank)

    def supplied(self, peer: int, blocks: Sequence[SyncedBlock], first: int) -> None:
        for height in [h for h in self.suppliers if h < first]:
            del self.suppliers[height]
        for block in blocks:
            self.suppliers[block.height] = peer
        while len(self.suppliers) > SYNC_SUPPLIERS_KEPT:
            del self.suppliers[next(iter(self.suppliers))]

    def invalid(self, peer: int, now_ms: int) -> PeerRecord:
        record = self.records.setdefault(peer, PeerRecord())
        record.invalid += 1
        backoff = min(SYNC_PEER_BACKOFF_MS << min(record.invalid - 1, 16),
                      SYNC_PEER_BACKOFF_MAX_MS)
        record.backoff_until_ms = now_ms + backoff
        return record


class SyncClient:
    """Asks the peers a ``RequestSync`` names, then every other validator of the shard,
    in ``SyncPeers`` order, each for up to ``batch_blocks_max`` blocks, until one
    answers with blocks that all check out (``SyncCheck``)."""

    def __init__(self, *, shard: int, me: int, validators: int, request: Request,
                 limits: SyncLimits, height: Callable[[], int], metrics: NodeMetrics,
                 log: Any, drop: DropLog, check: SyncCheck, rng: random.Random,
                 clock: Clock, pool: Executor) -> None:
        self.shard = shard
        self.me = me
        self.validators = validators
        self._request = request
        self.limits = limits
        self._height = height  # our committed height, for the logs
        self.metrics = metrics
        self.log = log
        self.drop = drop
        self.check = check
        self.peers = SyncPeers(rng)
        self.clock = clock
        self._pool = pool  # the ledger thread: checking is CPU work

    async def fetch(self, action: RequestSync) -> SyncResult | None:
        """The checked blocks of the first peer that has some, or None."""
        first = action.from_height
        last = min(action.to_height, first + self.limits.batch_blocks_max - 1)
        request = encode(SyncRequest(self.shard, first, last))
        valid = range(self.validators)
        hinted = [p for p in action.peers if p != self.me and p in valid]
        others = [p for p in valid if p != self.me]
        peers = self.peers.order(hinted, others, first, self.clock.monotonic_ms())
        self.log.info("sync.requested", first=first, last=last, peers=peers,
                      height=self._height())
        loop = asyncio.get_running_loop()
        for peer in peers:
            try:
                answer = await self._request(peer, request, SYNC_REQUEST_TIMEOUT_S)
            except ShardnetError as exc:  # no answer: not evidence against the peer
                self.drop("sync", exc.reason, peer=peer)
                continue
            verdict = await loop.run_in_executor(self._pool, self.check, answer, first, last)
            if verdict.reason:
                self._served_invalid(peer, verdict)
                continue
            if verdict.blocks:
                self.metrics.sync_blocks.inc(len(verdict.blocks))
                self.peers.supplied(peer, verdict.blocks, first)
                self.log.info("sync.applied", blocks=len(verdict.blocks), first=first,
                              peer=peer, height=self._height())
                return SyncResult(verdict.blocks)
        return None

    def _served_invalid(self, peer: int, verdict: Verdict) -> None:
        now = self.clock.monotonic_ms()
        record = self.peers.invalid(peer, now)
        reason = verdict.reason.split(":", 1)[0]
        self.metrics.sync_peer_invalid.labels(peer=str(peer), reason=reason).inc()
        self.log.warning("sync.peer_served_invalid", peer=peer, height=verdict.height,
                         reason=verdict.reason, invalid=record.invalid,
                         backoff_ms=record.backoff_until_ms - now)
