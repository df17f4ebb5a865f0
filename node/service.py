"""What the node does for its clients, apart from consensus itself.

Submitted transactions go to admission (``node/admission.py``); this is the
commit bookkeeping (mempool, metrics, logs, ``/v1/events``), the shard tips that
announcements report, and the answers of the HTTP API (``node/api.py``
types against ``NodeServiceAPI``). A simulator submits through it too.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import msgspec

from consensus.certificate import CommitCertificate, quorum_size, verify_certificate
from consensus.kernel.codec import decode, encode
from consensus.kernel.errors import ShardnetError
from node.admission import Admission
from node.config import NodeConfig
from node.driver import ConsensusDriver
from node.drops import DropLog
from node.errors import ApiError, SubmitResult
from node.events import EventHub, Subscription
from node.finality import Finality
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.parts import Clock
from node.relay import ReceiptRelay
from node.store import StoreAPI
from node.store.accounts import ACCOUNT_TXS_PAGE_MAX, cursor_of
from node.wire import BlockAnnouncement
from sharding.accounts import shard_of
from sharding.block import Block, BlockHeader, block_hash, decode_block
from sharding.executor import Rejected, TxOutcome
from sharding.genesis import Genesis
from sharding.ledger import Committed, Ledger
from sharding.receipts import RECEIPT_KINDS, Receipt
from sharding.records import CallFailed, get_out_seq
from sharding.tx import tx_hash

REJECTED_REMEMBERED_MAX = 100_000
TPS_WINDOW_MS = 10_000
# What ``GET /v1/txs/{hash}`` says about a transaction the mempool let go, by reason.
REMOVAL_DETAILS = {
    "nonce_used": "another transaction used this nonce",
    "expired_gapped": "a lower nonce of this sender never arrived",
    "evicted_gapped": "evicted behind a nonce gap to make room for runnable transactions",
    "unfunded_sender": "the sender has no account (it cannot pay)",
    "insufficient_balance": "the sender no longer holds what the call spends",
}
# /v1/health: a node with transactions ready to commit for this long and no commit for as
# long is "stalled" (a view change takes seconds; this is well beyond a healthy one).
HEALTH_STALLED_AFTER_MS = 30_000
SUBSCRIBER_QUEUE_MAX = 256  # events a /v1/events subscriber may fall behind, then dropped


def check_announcement(genesis: Genesis, data: bytes) -> tuple[str, BlockAnnouncement | None]:
    """Verify a block announcement's header and certificate against genesis:
    ("", the announcement) or (the reason, None). Pure: also the gossip validator,
    run in the p2p thread so the mesh does not relay what fails. ``out_seqs`` is a
    hint, not covered by the certificate: only its length is checked."""
    try:
        note = decode(data, BlockAnnouncement, 256 * 1024)
        header = decode(note.header, BlockHeader, 4096)
        cert = decode(note.certificate, CommitCertificate, 64 * 1024)
    except ShardnetError as exc:
        return exc.reason, None
    if not 0 <= note.shard < genesis.num_shards or header.shard != note.shard:
        return "wrong_shard", None
    if len(note.out_seqs) not in (0, genesis.num_shards):
        return "malformed", None
    if block_hash(header) != note.block_hash or header.height != note.height:
        return "bad_header", None
    validators = [v.public_key for v in genesis.validators[note.shard]]
    # Verify 2f+1 of that shard's genesis validators committed this block.
    if not verify_certificate(cert, genesis.chain_id, note.shard, note.height,
                              note.block_hash, validators):
        return "bad_certificate", None
    return "", note


class NodeService:
    def __init__(self, *, name: str, config: NodeConfig, ledger: Ledger, mempool: Mempool,
                 store: StoreAPI, metrics: NodeMetrics, log: Any,
                 admission_pool: Executor, ledger_pool: Executor,
                 forward: Callable[[int, bytes], None], peers_connected: Callable[[], int],
                 finality: Finality, driver: ConsensusDriver, relay: ReceiptRelay,
                 shard_tips: dict[int, int], clock: Clock, drop: DropLog,
                 send_to: Callable[[int, int, bytes], bool] | None = None,
                 shard_peers: Callable[[], frozenset[int]] | None = None) -> None:
        self.name = name
        self.config = config
        self.ledger = ledger
        self.mempool = mempool
        self.store = store
        self.metrics = metrics
        self.log = log
        self._ledger_pool = ledger_pool
        self._peers_connected = peers_connected
        self._shard_peers = shard_peers
        self.driver = driver
        self.clock = clock
        self.drop = drop
        self._rejected: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        # Transactions of blocks applied to the ledger whose storage write is still
        # queued (node/driver.py): "pending" until stored, never "rejected" meanwhile
        # (the mempool may drop them as nonce_used once the ledger's nonce moved).
        self._storing: dict[bytes, int] = {}
        # ... and when each of them reached this node's pool, for the commit latency
        # (the pool may have dropped it by the time the block is stored).
        self._arrived_ms: dict[bytes, int] = {}
        self._committed_window: deque[tuple[int, int]] = deque()
        self._applied_window: deque[tuple[int, int]] = deque()  # (ms, txs) applied
        self.events = EventHub(SUBSCRIBER_QUEUE_MAX, self._subscriber_dropped)
        self.shard_tips = shard_tips
        self.finality = finality
        self.relay = relay
        self.started_ms = clock.monotonic_ms()
        self.last_commit_ms: int | None = None  # since start (/v1/health)
        self.admission = Admission(
            ledger=ledger, mempool=mempool, metrics=metrics, log=log, pool=admission_pool,
            clock=clock, drop=drop, forward=forward, on_added=self._mempool_changed,
            peer_batch_bytes_max=config.api.body_bytes_max,
            frame_bytes_max=config.p2p.frame_bytes_max,
            verify_threads=config.executor.verify_threads,
            reforward_after_ms=config.mempool.reforward_after_ms,
            send_to=send_to, shard_peers=shard_peers, drain_tps=self.drain_tps)

    # -- admission -----------------------------------------------------------------

    async def submit_txs(self, raw_txs: list[bytes]) -> list[SubmitResult]:
        """Admit transactions as a client submits them (the HTTP API, a simulator)."""
        return await self.admission.submit(raw_txs)

    async def housekeeping(self, interval_s: float = 1.0) -> None:
        """Expire transactions stuck behind a nonce gap (reported, never silent),
        refresh the gauges, and (beside) forward again what waits too long. Runs for
        the node's lifetime."""
        resend = asyncio.ensure_future(self.admission.run_resend())
        try:
            await self._housekeeping(interval_s)
        finally:
            resend.cancel()

    async def _housekeeping(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.housekeeping_pass()

    def housekeeping_pass(self) -> None:
        """One pass: expire and report what the pool drops, refresh the gauges."""
        removed_now = self.mempool.expire(self.clock.monotonic_ms(),
                                          self.config.mempool.gapped_ttl_ms)
        # A transaction of a block applied but not yet stored leaves the pool as
        # nonce_used: committed, reported by block.committed, never "expired".
        expired = [r for r in removed_now if r.tx.tx_hash not in self._storing]
        for removed in expired:
            self._remember_rejected(removed.tx.tx_hash, removed.reason,
                                    REMOVAL_DETAILS.get(removed.reason, removed.reason))
        if expired:
            self.log.info("mempool.expired", count=len(expired),
                          txs=[r.tx.tx_hash.hex() for r in expired])
        self.metrics.peers.set(self._peers_connected())
        self._mempool_changed()

    def _mempool_changed(self) -> None:
        self.metrics.mempool_txs.set(len(self.mempool))
        self.metrics.mempool_bytes.set(self.mempool.size_bytes)
        self.driver.wake()

    def on_rejected(self, rejected: list[Rejected]) -> None:
        hashes = [tx_hash(r.tx) for r in rejected]
        for digest, item in zip(hashes, rejected, strict=True):
            self._remember_rejected(digest, item.reason, "invalid when proposed")
        self.mempool.remove_committed(hashes)
        self._mempool_changed()

    def _remember_rejected(self, digest: bytes, reason: str, detail: str) -> None:
        if digest in self._storing:
            return  # committed; reported once stored
        self._rejected[digest] = (reason, detail)
        if len(self._rejected) > REJECTED_REMEMBERED_MAX:
            self._rejected.popitem(last=False)

    # -- commits ---------------------------------------------------------------------

    def on_applied(self, committed: Committed) -> None:
        """A committed block is applied to the ledger; its storage write is queued."""
        for outcome in committed.result.outcomes:
            self._storing[outcome.tx_hash] = committed.height
            pending = self.mempool.get(outcome.tx_hash)
            if pending is not None:
                self._arrived_ms[outcome.tx_hash] = pending.arrival_ms
        self._applied_window.append((self.clock.monotonic_ms(), len(committed.result.outcomes)))

    def on_committed(self, committed: Committed, certificate: CommitCertificate) -> None:
        """A committed block is stored: report it (status, events, metrics)."""
        now = self.clock.monotonic_ms()
        result = committed.result
        hashes = [o.tx_hash for o in result.outcomes]
        for digest in hashes:
            arrived_ms = self._arrived_ms.pop(digest, None)
            if arrived_ms is None:
                pending = self.mempool.get(digest)
                arrived_ms = None if pending is None else pending.arrival_ms
            if arrived_ms is not None:
                self.metrics.commit_latency.observe((now - arrived_ms) / 1000)
        for removed in self.mempool.remove_committed(hashes):
            self._remember_rejected(removed.tx.tx_hash, removed.reason,
                                    REMOVAL_DETAILS.get(removed.reason, removed.reason))
        failed = sum(not o.ok for o in result.outcomes)
        self.metrics.txs_committed.labels(outcome="ok").inc(len(hashes) - failed)
        self.metrics.txs_committed.labels(outcome="failed").inc(failed)
        self.metrics.blocks_committed.inc()
        self.metrics.height.set(committed.height)
        emitted: dict[int, int] = {}
        for receipt in result.receipts:
            emitted[receipt.dst_shard] = emitted.get(receipt.dst_shard, 0) + 1
        for dst, count in emitted.items():
            self.metrics.receipts_emitted.labels(dst=str(dst)).inc(count)
        for digest in hashes:
            self._storing.pop(digest, None)
        self._mempool_changed()
        self._committed_window.append((now, len(hashes)))
        self.last_commit_ms = now
        header = committed.block.header
        self.log.info("block.committed", height=committed.height, view=certificate.view,
                      block=committed.block_hash.hex(), txs_count=len(hashes), failed=failed,
                      receipts=len(result.receipts), inbound=len(committed.block.inbound),
                      state_root=header.state_root.hex(), txs=[digest.hex() for digest in hashes])
        by_dst: dict[int, list[Receipt]] = {}
        for receipt in result.receipts:
            by_dst.setdefault(receipt.dst_shard, []).append(receipt)
        for dst, receipts in by_dst.items():
            self.log.info("receipt.emitted", dst_shard=dst, height=committed.height,
                          first_seq=receipts[0].seq, last_seq=receipts[-1].seq,
                          count=len(receipts), origins=[r.origin.hex() for r in receipts])
        event = self.block_json(committed.block, committed.block_hash, certificate)
        event["failed"] = [o.tx_hash.hex() for o in result.outcomes if not o.ok]
        self.events.publish(event)

    def announcement(self, committed: Committed, certificate: CommitCertificate) -> bytes:
        """This node's announcement of a block it proposed. ``out_seqs`` reads the
        committed state, which may already be past this block: a hint at most ahead."""
        shard, state = self.ledger.shard, self.ledger.state
        out_seqs = tuple(0 if dst == shard else get_out_seq(state, dst)
                         for dst in range(self.ledger.genesis.num_shards))
        return encode(BlockAnnouncement(shard, committed.height,
                                        committed.block_hash, encode(committed.block.header),
                                        encode(certificate), out_seqs))

    def on_announcement(self, data: bytes) -> str:
        """A commit of another shard: verify it, then record that shard's tip and hand
        the relay its hint. Returns "" or the reason for dropping."""
        reason, note = check_announcement(self.ledger.genesis, data)
        if note is None:
            return reason
        if note.height > self.shard_tips.get(note.shard, 0):
            self.shard_tips[note.shard] = note.height
        own = self.ledger.shard
        if note.out_seqs and note.shard != own:
            self.relay.note_announced(note.shard, note.out_seqs[own])
        return ""

    def note_own_tip(self, height: int) -> None:
        """Our shard's entry of ``shard_tips`` (announcements go to other shards only)."""
        own = self.ledger.shard
        if height > self.shard_tips.get(own, 0):
            self.shard_tips[own] = height

    # -- API answers -------------------------------------------------------------------

    async def tx_status(self, digest: bytes) -> dict[str, Any] | None:
        pending = self.mempool.get(digest)
        if pending is not None:
            return {"hash": digest.hex(), "status": "pending", "shard": self.ledger.shard}
        record = await self.store.get_tx(digest)
        if record is not None:
            outcome = decode(record.outcome, TxOutcome, 4096)
            body: dict[str, Any] = {
                "hash": digest.hex(), "status": "failed", "shard": self.ledger.shard,
                "height": record.height, "index": record.position,
                "outcome": {"ok": outcome.ok, "error": outcome.error or None,
                            "receipts": outcome.receipts},
            }
            if outcome.ok:
                # committed here; finalized once every receipt it caused is applied.
                followed = await self.finality.follow(digest, record.height)
                body["status"] = "finalized" if followed["finalized"] else "committed"
                body["hops"] = followed["hops"]
                if followed["pending"]:
                    body["pending_receipts"] = followed["pending"]
            return body
        if digest in self._storing:  # applied, being stored
            return {"hash": digest.hex(), "status": "pending", "shard": self.ledger.shard}
        if digest in self._rejected:
            reason, detail = self._rejected[digest]
            return {"hash": digest.hex(), "status": "rejected", "shard": self.ledger.shard,
                    "error": reason, "detail": detail}
        return None

    def account(self, address: bytes) -> dict[str, Any]:
        home = shard_of(address, self.ledger.genesis.num_shards)
        body: dict[str, Any] = {"address": address.hex(), "shard": home}
        if home != self.ledger.shard:
            raise ApiError(400, "wrong_shard",
                           f"address lives on shard {home}; this node serves shard "
                           f"{self.ledger.shard}")
        body.update(self.ledger.account(address))
        body["height"] = self.ledger.height
        return body

    def lending(self, address: bytes) -> dict[str, Any]:
        """``GET /v1/lending/{address}`` (issue 18): the position, health factor and
        markets; 404 ``no_lending`` on a shard without the lending program."""
        try:
            report = self.ledger.lending(address)
        except CallFailed as exc:  # a market that can no longer accrue (overflow)
            raise ApiError(409, exc.reason, str(exc)) from None
        if report is None:
            raise ApiError(404, "no_lending", f"shard {self.ledger.shard} runs no lending "
                           "markets")
        report["shard"] = self.ledger.shard
        report["height"] = self.ledger.height
        return report

    async def account_txs(self, address: bytes, before: int, limit: int) -> dict[str, Any]:
        """A page of ``address``'s history, newest first (node/store/accounts.py):
        ``next_before`` continues it, None on the last page. Refused off its shard."""
        home = shard_of(address, self.ledger.genesis.num_shards)
        if home != self.ledger.shard:
            raise ApiError(400, "wrong_shard",
                           f"address lives on shard {home}; this node serves shard "
                           f"{self.ledger.shard}")
        entries = await self.store.get_account_txs(address, before, limit)
        txs = [{"hash": e.tx_hash.hex(), "height": e.height, "ordinal": e.ordinal,
                "role": e.role, "cursor": cursor_of(e.height, e.ordinal)} for e in entries]
        full = len(entries) >= min(limit, ACCOUNT_TXS_PAGE_MAX)
        return {"address": address.hex(), "shard": home, "txs": txs,
                "next_before": txs[-1]["cursor"] if txs and full else None}

    async def block(self, height: int | None) -> dict[str, Any] | None:
        stored = await (self.store.latest_block() if height is None
                        else self.store.get_block(height))
        if stored is None:
            return None
        block = decode_block(stored.block, self.config.consensus.block_bytes_max * 2)
        cert = decode(stored.certificate, CommitCertificate, 64 * 1024)
        return self.block_json(block, stored.block_hash, cert)

    @staticmethod
    def block_json(block: Block, digest: bytes, certificate: CommitCertificate
                   ) -> dict[str, Any]:
        header = block.header
        return {
            "shard": header.shard, "height": header.height, "view": header.view,
            "hash": digest.hex(), "prev_hash": header.prev_hash.hex(),
            "time_ms": header.time_ms, "proposer": header.proposer,
            "tx_root": header.tx_root.hex(), "inbound_root": header.inbound_root.hex(),
            "receipts_root": header.receipts_root.hex(), "state_root": header.state_root.hex(),
            "evidence_root": header.evidence_root.hex(),
            "txs": [tx_hash(tx).hex() for tx in block.txs],
            "inbound_receipts": len(block.inbound),
            "inbound_origins": [receipt.origin.hex() for receipt in block.inbound],
            "certificate": {"view": certificate.view,
                            "signers": [s.index for s in certificate.signatures]},
        }

    async def audit(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        result: dict[str, Any] = await loop.run_in_executor(self._ledger_pool,
                                                            self.ledger.audit_totals)
        return result

    async def receipts(self, dst_shard: int, first_seq: int, last_seq: int
                       ) -> dict[str, Any]:
        """Channel (this shard -> ``dst_shard``) receipts with their proofs and the
        certified headers they are proven against: what the relay's pull path serves."""
        bundles = await self.relay.bundles(dst_shard, first_seq, last_seq)
        receipts: list[dict[str, Any]] = []
        sources: list[dict[str, Any]] = []
        for bundle in bundles:
            header = bundle.source.header
            sources.append({"shard": header.shard, "height": header.height,
                            "hash": block_hash(header).hex(),
                            "receipts_root": header.receipts_root.hex(),
                            "time_ms": header.time_ms,
                            "header": encode(header).hex(),
                            "certificate": bundle.source.certificate.hex()})
            for receipt, proof in zip(bundle.receipts, bundle.proofs, strict=True):
                receipts.append({
                    "src_shard": receipt.src_shard, "dst_shard": receipt.dst_shard,
                    "seq": receipt.seq, "kind": RECEIPT_KINDS[receipt.kind],
                    "origin": receipt.origin.hex(), "sender": receipt.sender.hex(),
                    "recipient": receipt.recipient.hex(), "asset": receipt.asset,
                    "amount": receipt.amount, "height": header.height,
                    "encoded": encode(receipt).hex(),
                    "proof": {"index": proof.index, "tree_size": proof.tree_size,
                              "path": [node.hex() for node in proof.path]},
                })
        return {"src_shard": self.ledger.shard, "dst_shard": dst_shard,
                "out_seq": get_out_seq(self.ledger.state, dst_shard)
                if dst_shard != self.ledger.shard else 0,
                "receipts": receipts, "sources": sources}

    def recent_tps(self) -> float:
        now = self.clock.monotonic_ms()
        while self._committed_window and now - self._committed_window[0][0] > TPS_WINDOW_MS:
            self._committed_window.popleft()
        span_ms = min(TPS_WINDOW_MS, max(1, now - self.started_ms))
        return round(sum(n for _, n in self._committed_window) * 1000 / span_ms, 1)

    def drain_tps(self) -> float:
        """Transactions applied per second over the last ``TPS_WINDOW_MS``: the rate the
        mempool drains at (applied, not stored: ``recent_tps`` lags the storage writes),
        for admission's forwarding again."""
        now = self.clock.monotonic_ms()
        window = self._applied_window
        while window and now - window[0][0] > TPS_WINDOW_MS:
            window.popleft()
        span_ms = min(TPS_WINDOW_MS, max(1, now - self.started_ms))
        return sum(n for _, n in window) * 1000 / span_ms

    def status(self) -> dict[str, Any]:
        replica = self.driver.replica
        return {
            "node": self.name, "chain_id": self.ledger.genesis.chain_id,
            "shard": self.ledger.shard, "num_shards": self.ledger.genesis.num_shards,
            "validator_index": replica.me, "view": replica.view,
            "primary": replica.primary(),
            "height": self.ledger.height, "block_hash": self.ledger.tip_hash.hex(),
            "state_root": self.ledger.state.root.hex(),
            "peers": self._peers_connected(),
            "mempool": len(self.mempool), "mempool_bytes": self.mempool.size_bytes,
            "recent_tps": self.recent_tps(),
            "view_changes": self.driver.view_changes,
            "shard_tips": {str(k): v for k, v in sorted(self.shard_tips.items())},
        }

    def health(self) -> dict[str, Any]:
        """Readiness (``GET /v1/health``, the compose healthcheck): ``ready`` when every
        reason below is absent.

        - ``no_peers``: fewer than a quorum's worth (2f) of the other validators of our
          shard connected: this node cannot help commit.
        - ``no_commit_yet``: transactions are ready to commit but nothing has committed
          since start (height 0 only: a fresh network never builds an empty block, so an
          idle one at height 0 with its peers connected is ready, or nothing could ever
          wait for it and then send the first transaction).
        - ``stalled``: a transaction has been ready to commit for
          ``HEALTH_STALLED_AFTER_MS`` and nothing committed for as long.

        An idle network stays ready: with nothing pending there is nothing to stall."""
        now = self.clock.monotonic_ms()
        genesis = self.ledger.genesis
        n = len(genesis.validators[self.ledger.shard])
        needed = quorum_size(n) - 1
        connected = (len(self._shard_peers()) if self._shard_peers is not None
                     else self._peers_connected())
        oldest = self.mempool.oldest_ready_arrival_ms()
        last = self.started_ms if self.last_commit_ms is None else self.last_commit_ms
        reasons = []
        if connected < needed:
            reasons.append("no_peers")
        if oldest is not None and self.ledger.height == 0 and self.last_commit_ms is None:
            reasons.append("no_commit_yet")
        if (oldest is not None and now - oldest >= HEALTH_STALLED_AFTER_MS
                and now - last >= HEALTH_STALLED_AFTER_MS):
            reasons.append("stalled")
        return {
            "ready": not reasons, "reasons": reasons, "node": self.name,
            "shard": self.ledger.shard, "height": self.ledger.height,
            "shard_peers": connected, "shard_peers_needed": needed,
            "pending_ready_ms": None if oldest is None else now - oldest,
            "since_commit_ms": None if self.last_commit_ms is None
            else now - self.last_commit_ms,
        }

    def network(self) -> dict[str, Any]:
        """Chain id, shards, genesis and every validator's advertised API URL: one URL
        is enough for a client to find the whole network."""
        genesis = self.ledger.genesis
        advertised = self.config.api.advertise_urls
        nodes = []
        for shard, validators in enumerate(genesis.validators):
            for validator in validators:
                urls = advertised[shard] if shard < len(advertised) else []
                url = (urls[validator.index] if validator.index < len(urls)
                       else f"http://{validator.api_address}")
                nodes.append({"shard": shard, "index": validator.index,
                              "name": f"shard{shard}-node{validator.index}", "api_url": url,
                              "self": (shard, validator.index) == (
                                  self.ledger.shard, self.config.node.index)})
        return {"chain_id": genesis.chain_id, "num_shards": genesis.num_shards,
                "node": self.name, "nodes": nodes, "genesis": msgspec.to_builtins(genesis.spec)}

    def subscribe_blocks(self) -> Subscription:
        """Committed-block events from now on: registered before this returns, so a
        caller that subscribes and then submits sees its block. Close it when done."""
        return self.events.subscribe()

    def _subscriber_dropped(self, backlog: int) -> None:
        self.metrics.events_subscribers_dropped.labels(reason="slow").inc()
        self.log.warning("events.subscriber_dropped", reason="slow", backlog=backlog,
                         queue_max=SUBSCRIBER_QUEUE_MAX, subscribers=len(self.events))

    def close(self) -> None:
        """End ``/v1/events`` streams and admission's pending work (the node stops)."""
        self.events.close_all()
        self.admission.stop()

    def metrics_text(self) -> bytes:
        return self.metrics.render()
