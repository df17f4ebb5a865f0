"""Transactions coming in, and going on to the shard's other replicas.

Admission decodes and checks a transaction (shard, amounts, Ed25519 signature) on
the admission pool, off the event loop, then whether its sender can pay against the
committed state (``check_tx_payable``: ``unfunded_sender``, ``insufficient_balance``;
advisory, the state moves: the proposer and the replicas apply the same rule to the
block), then offers it to the mempool (nonce window, capacity, the gapped share). What
the mempool cannot take (``Mempool.room``, less the batches being checked) is refused
``mempool_full`` before any of that, and a full pool is logged once per batch.
Transactions a client submitted are then forwarded once runnable: a gapped one (its
nonce ahead of its sender's next) waits here until the mempool reports it runnable,
and is never forwarded if it leaves the pool before. Forwarded transactions are
collected for ``FORWARD_INTERVAL_S`` and sent as ``TxBatch``es on channel 2, bounded
by count and by bytes. A peer admits a batch the same way (signatures included, so
block validation finds them verified) and does not forward it again; a transaction it
already holds is recognised by its hash, read off its bytes before decoding.

A forward can be lost (a partition, a peer restarting), so it is not sent only once
(issue 15: the transactions a cut-off node took, or those the replicas took while the
primary restarted, never reached a primary and were lost). As a mempool reactor does
(CometBFT sends a peer every transaction it has not sent that peer yet, a reconnected
peer all of them): a client's transaction still pending ``reforward_after_ms`` after it
arrived (``[mempool]``, a few block intervals) is forwarded again, then after twice as
long, and so on (at most ``MEMPOOL_REFORWARD_INTERVAL_MAX_MS`` apart), until it leaves
the pool; and a validator of the shard that (re)connects is sent every runnable
transaction of the pool (bounded), its own clients' and its peers'. Link faults do not
drop connections, so the first is needed besides the second.

Admission also owns the mempool's two hooks: ``head_problem`` (a sender's next
transaction after a commit is checked again: only its own commits lower its
balance, so a replica drops what the primary would refuse instead of counting it as
work the primary owes) and ``on_runnable`` (forward what was held).
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from consensus.kernel.codec import encode
from consensus.kernel.crypto import VerifyMany, verify_signatures
from consensus.kernel.errors import DecodeError, ShardnetError
from node import defaults
from node.drops import DropLog
from node.errors import SubmitResult
from node.mempool import DuplicateTx, Mempool, MempoolError, MempoolFull, PendingTx, Removed
from node.metrics import NodeMetrics
from node.parts import Clock, InlineExecutor
from node.verify_pool import VerifyPool, resolve_verify_threads
from node.wire import CHANNEL_TXS, TX_BATCH_TXS_MAX, decode_tx_batch, encode_tx_batch
from sharding.ledger import Ledger
from sharding.state import StateReader
from sharding.tx import (
    InvalidTx,
    SignedTx,
    check_tx_nonce,
    check_tx_payable,
    compute_signing_message,
    decode_tx,
    raw_tx_hash,
    stateless_passed,
    tx_hash,
)

FORWARD_INTERVAL_S = 0.02
TX_BATCH_ITEM_OVERHEAD_BYTES = 8  # msgpack bin header of one transaction in a batch
# Forwarding again: transactions queued per round (the rest are due next round), and
# what a (re)connected peer is sent of the pool at most.
REFORWARD_TXS_PER_ROUND_MAX = 4 * TX_BATCH_TXS_MAX
RECONNECT_RESEND_TXS_MAX = 4 * TX_BATCH_TXS_MAX
RECONNECT_RESEND_BYTES_MAX = 8 * defaults.MIB
# Forwarding again waits for the pool's backlog to drain (``Admission._backlog_ms``) at
# most this long: a forward lost while the pool is this deep is repeated this late.
REFORWARD_BACKLOG_MAX_MS = 60_000

Checked = tuple[SignedTx | None, bytes | None, ShardnetError | None]


def admit_batch(ledger: Ledger, raws: list[bytes],
                verify_many: VerifyMany = verify_signatures,
                known: Callable[[bytes], bool] | None = None) -> list[Checked]:
    """Decode and check transactions (runs on the admission pool: signatures are CPU):
    per transaction, (tx, hash, None) or (None, the hash if it decoded, the error).

    ``ledger.admit``'s checks, in its order, with the signatures of the whole batch
    verified by one ``verify_many`` call (the node's verify threads,
    node/verify_pool.py): decode, the stateless checks but the signature, then the
    signatures not already verified, then whether the sender can pay. A transaction
    whose hash ``known`` reports (the mempool holds it: a peer's forward repeated) is a
    ``DuplicateTx`` before any other work, decoding included: the hash is read off the
    bytes (``raw_tx_hash``), and for a transaction that decodes it is its hash."""
    chain_id, shard, num_shards = ledger.genesis.chain_id, ledger.shard, ledger.genesis.num_shards
    decoded: list[SignedTx | ShardnetError] = []
    digests: list[bytes] = []  # b"": did not decode
    for raw in raws:
        digest = raw_tx_hash(raw)
        if digest is not None and known is not None and known(digest):
            digests.append(digest)
            decoded.append(DuplicateTx("transaction already pending"))
            continue
        try:
            tx = decode_tx(raw)
        except ShardnetError as exc:
            decoded.append(exc)
            digests.append(b"")
            continue
        digest = tx_hash(tx) if digest is None else digest
        digests.append(digest)
        try:
            # Remembered when it passes: the block carrying it skips these checks.
            stateless_passed.check(tx, digest, chain_id, shard, num_shards)
        except ShardnetError as exc:
            decoded.append(exc)
            continue
        decoded.append(tx)
    # Each transaction is hashed once (``digests``): the verified cache is keyed by it.
    # What the cache lacks is verified in one ``verify_many`` call, but a signature the
    # ledger is verifying right now (the same transactions' block) is waited for.
    unverified = [k for k, item in enumerate(decoded)
                  if isinstance(item, SignedTx) and not ledger.verified.holds(item, digests[k])]
    txs = [item for item in (decoded[k] for k in unverified) if isinstance(item, SignedTx)]

    def verify(batch: list[SignedTx]) -> list[bool]:
        return verify_many([(tx.body.sender, compute_signing_message(tx.body), tx.signature)
                            for tx in batch])

    verdicts = ledger.verified.check_once(txs, [digests[k] for k in unverified], verify)
    for k, verified in zip(unverified, verdicts, strict=True):
        if not verified:
            decoded[k] = InvalidTx("signature does not verify", reason="bad_signature")
    out: list[Checked] = []
    for item, digest in zip(decoded, digests, strict=True):
        if isinstance(item, ShardnetError):
            out.append((None, digest if isinstance(item, DuplicateTx) else None, item))
            continue
        try:
            # Verify the sender can pay, against the committed state (advisory).
            check_tx_payable(ledger.state, item)
        except InvalidTx as exc:
            out.append((None, digest, exc))
            continue
        out.append((item, digest, None))
    return out


class _ReadOnce:
    """A state reader that reads each key once (a consistent view of one record)."""

    __slots__ = ("_base", "_seen")

    def __init__(self, base: StateReader) -> None:
        self._base = base
        self._seen: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key not in self._seen:
            self._seen[key] = self._base.get(key)
        return self._seen[key]


class Admission:
    def __init__(self, *, ledger: Ledger, mempool: Mempool, metrics: NodeMetrics, log: Any,
                 pool: Executor, clock: Clock, drop: DropLog,
                 forward: Callable[[int, bytes], None], on_added: Callable[[], None],
                 peer_batch_bytes_max: int, frame_bytes_max: int,
                 verify_threads: int = 1,
                 reforward_after_ms: int = defaults.MEMPOOL_REFORWARD_AFTER_MS,
                 send_to: Callable[[int, int, bytes], bool] | None = None,
                 shard_peers: Callable[[], frozenset[int]] | None = None,
                 drain_tps: Callable[[], float] | None = None) -> None:
        """``forward(channel, data)`` sends to every other validator of the shard;
        ``on_added`` runs after transactions entered the mempool. A peer's batch may
        be ``peer_batch_bytes_max`` bytes (the API's body limit); batches sent are at
        most half of that and of ``frame_bytes_max``. A batch's signatures are verified
        on ``verify_threads`` threads (``[executor] verify_threads``; 0: every core),
        except under inline offload (the simulator's parts): work stays on the loop's
        thread there, signatures included. A client's transaction still pending
        ``reforward_after_ms`` after it arrived is forwarded again (``resend``);
        ``send_to(index, channel, data)`` sends to one validator of the shard and
        ``shard_peers()`` tells which are connected (both or neither: without them a
        reconnected peer is not sent the pool). ``drain_tps()`` (the recent commit rate)
        defers forwarding again while a transaction is younger than the time the pool
        takes to drain at that rate (``_backlog_ms``)."""
        self.ledger = ledger
        self.verify_pool = VerifyPool(
            1 if isinstance(pool, InlineExecutor) else resolve_verify_threads(verify_threads))
        self.mempool = mempool
        self.metrics = metrics
        self.log = log
        self._pool = pool
        self.clock = clock
        self.drop = drop
        self._forward = forward
        self._on_added = on_added
        self.peer_batch_bytes_max = peer_batch_bytes_max
        self.forward_bytes_max = min(peer_batch_bytes_max, frame_bytes_max) // 2
        self._to_forward: list[tuple[bytes, bytes]] = []  # (raw, tx hash)
        # A client's gapped transactions, held until runnable: tx hash -> raw.
        self._held: dict[bytes, bytes] = {}
        mempool.on_runnable = self._on_runnable
        mempool.head_problem = self._head_problem
        self._forward_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Forwarding again: our clients' transactions by when they are due, (due ms, tx
        # hash, interval ms), and each one's current due time (older heap entries are
        # stale); the shard peers connected at the last look.
        self.reforward_after_ms = reforward_after_ms
        self._resend_heap: list[tuple[int, bytes, int]] = []
        self._resend_at: dict[bytes, int] = {}
        self._send_to = send_to
        self._shard_peers = shard_peers
        self._peers_seen: frozenset[int] = frozenset()
        self._drain_tps = drain_tps
        # Transactions and bytes of the batches being checked right now (room in the
        # mempool they may take once checked).
        self._checking_txs = 0
        self._checking_bytes = 0

    # -- room ----------------------------------------------------------------------

    def _fitting(self, raw_txs: list[bytes]) -> list[bool]:
        """Which of ``raw_txs`` may be checked: in order, as many as the mempool could
        still take (``Mempool.room``) less what the batches being checked right now may
        take; a copy of a transaction the pool holds takes no room (checked: it is a
        duplicate before decoding). The others are refused ``mempool_full`` before they
        are decoded or their signatures verified (issue 16: under overload every
        refused transaction was verified first)."""
        places, room = self.mempool.room()
        places -= self._checking_txs
        room -= self._checking_bytes
        if len(raw_txs) <= places and sum(map(len, raw_txs)) <= room:
            return [True] * len(raw_txs)
        fits: list[bool] = []
        for raw in raw_txs:
            digest = raw_tx_hash(raw)
            if digest is not None and digest in self.mempool:
                fits.append(True)
            elif places > 0 and len(raw) <= room:
                fits.append(True)
                places -= 1
                room -= len(raw)
            else:
                fits.append(False)
        return fits

    async def _check(self, raw_txs: list[bytes]) -> list[Checked]:
        """``admit_batch`` on the admission pool for the transactions that may fit; a
        ``MempoolFull`` for the others (no hash in their results: not decoded)."""
        fits = self._fitting(raw_txs)
        chosen = raw_txs if all(fits) else [raw for raw, ok in zip(raw_txs, fits, strict=True)
                                            if ok]
        checked: list[Checked] = []
        if chosen:
            count, size = len(chosen), sum(map(len, chosen))  # held copies too: an upper bound
            self._checking_txs += count
            self._checking_bytes += size
            try:
                checked = await asyncio.get_running_loop().run_in_executor(
                    self._pool, admit_batch, self.ledger, chosen,
                    self.verify_pool.verify_many, self.mempool.__contains__)
            finally:
                self._checking_txs -= count
                self._checking_bytes -= size
        if len(chosen) == len(raw_txs):
            return checked
        full = MempoolFull(f"mempool holds {len(self.mempool)} txs, "
                           f"{self.mempool.size_bytes} bytes (refused before its checks)")
        results = iter(checked)
        return [next(results) if ok else (None, None, full) for ok in fits]

    # -- from clients --------------------------------------------------------------

    async def submit(self, raw_txs: list[bytes]) -> list[SubmitResult]:
        """One result per transaction; the accepted ones are forwarded. A full pool is
        logged once per batch (``mempool.full``, ``count`` refused)."""
        checked = await self._check(raw_txs)
        results: list[SubmitResult] = []
        counts: Counter[str] = Counter()  # by result: the counter is moved once per batch
        accepted_hashes: list[str] = []
        now = self.clock.monotonic_ms()
        for raw, (tx, digest, error) in zip(raw_txs, checked, strict=True):
            if error is None and tx is not None and digest is not None:
                promoted_from = len(self._to_forward)
                try:
                    evicted = self.mempool.add(PendingTx(digest, tx.body.sender, tx.body.nonce,
                                                         len(raw), now, tx))
                except MempoolError as exc:
                    error = exc
                else:
                    results.append(SubmitResult(digest, True))
                    accepted_hashes.append(digest.hex())
                    self._route(raw, digest, promoted_from)
                    self._resend_later(digest, now, self.reforward_after_ms)
                    self._report_evicted(evicted)
                    counts["accepted"] += 1
                    continue
            if error is None:  # unreachable: admit_batch returns a tx or an error
                error = ShardnetError("admission failed", reason="internal")
            counts[error.reason] += 1
            results.append(SubmitResult(digest, False, error.reason, error.detail))
            if error.reason != "mempool_full":
                self.log.info("tx.rejected", tx=digest.hex() if digest else None,
                              error=error.reason, detail=error.detail[:200])
        for result, count in counts.items():
            self.metrics.txs_received.labels(result=result).inc(count)
        if full := counts["mempool_full"]:
            self.log.warning("mempool.full", count=full, txs=len(self.mempool),
                             bytes=self.mempool.size_bytes)
        if accepted_hashes:
            self.log.info("tx.received", txs=accepted_hashes, count=len(accepted_hashes))
            self._schedule_forward()
            self._on_added()
        return results

    # -- from shard peers ----------------------------------------------------------

    def on_batch(self, peer: str, data: bytes) -> None:
        """A ``TxBatch`` from a validator of our shard (channel 2)."""
        try:
            batch = decode_tx_batch(data, self.peer_batch_bytes_max)
        except DecodeError as exc:
            self.drop("p2p", exc.reason, peer=peer, channel=CHANNEL_TXS)
            return
        task = asyncio.ensure_future(self._admit_forwarded(batch.txs[:TX_BATCH_TXS_MAX]))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _admit_forwarded(self, raw_txs: list[bytes]) -> None:
        # What cannot fit is refused before its checks, and a transaction the pool
        # holds by hash right after decoding (a peer forwarding it again, or sending
        # the pool after a reconnect).
        checked = await self._check(raw_txs)
        now = self.clock.monotonic_ms()
        counts: Counter[str] = Counter()  # by result: the counter is moved once per batch
        for raw, (tx, digest, error) in zip(raw_txs, checked, strict=True):
            if isinstance(error, MempoolError):
                counts[error.reason] += 1
                continue
            if error is not None or tx is None or digest is None:
                self.drop.count("peer_tx", error.reason if error else "?")
                continue
            try:
                self._report_evicted(self.mempool.add(
                    PendingTx(digest, tx.body.sender, tx.body.nonce, len(raw), now, tx)))
            except MempoolError as exc:
                # Mostly expected (a copy of what a block already committed): counted, not
                # logged per transaction.
                counts[exc.reason] += 1
                continue
            counts["accepted"] += 1
        for result, count in counts.items():
            self.metrics.peer_txs.labels(result=result).inc(count)
        if counts["accepted"]:
            self._on_added()

    # -- the mempool's hooks -------------------------------------------------------

    def _head_problem(self, tx: SignedTx) -> str:
        """Why a sender's next transaction can no longer run ("" if it can). Read on
        the loop while the ledger thread may be committing: each key is read once, so
        nonce and balances come from one version of the account."""
        view = _ReadOnce(self.ledger.state)
        try:
            check_tx_nonce(view, tx)
        except InvalidTx:
            return ""  # a commit just used its nonce: the next settle reports it
        try:
            check_tx_payable(view, tx)
        except InvalidTx as exc:
            self.log.info("mempool.unpayable", tx=tx_hash(tx).hex(), error=exc.reason)
            return exc.reason
        return ""

    def _report_evicted(self, evicted: list[Removed]) -> None:
        if evicted:
            for _ in evicted:
                self.drop.count("mempool", "evicted_gapped")
            self.log.info("mempool.evicted", count=len(evicted), reason="evicted_gapped",
                          txs=[r.tx.tx_hash.hex() for r in evicted])

    # -- forwarding ----------------------------------------------------------------

    def _route(self, raw: bytes, digest: bytes, promoted_from: int) -> None:
        """A client's accepted transaction: forward it if runnable (ahead of those it
        just made runnable, which follow it in nonce order), else hold it."""
        if self.mempool.is_gapped(digest):
            self._held[digest] = raw
            if len(self._held) > self.mempool.gapped_txs_max:
                # Drop what left the pool while gapped (amortised: this leaves at most
                # the pool's gapped transactions).
                self._held = {h: r for h, r in self._held.items() if self.mempool.is_gapped(h)}
        elif promoted_from < len(self._to_forward):
            self._to_forward.insert(promoted_from, (raw, digest))
        else:
            self._to_forward.append((raw, digest))

    def _on_runnable(self, items: list[PendingTx]) -> None:
        """Held transactions that became runnable (a gap filled, or a commit moved the
        sender's nonce): forward them now."""
        released = [(raw, item.tx_hash) for item in items
                    if (raw := self._held.pop(item.tx_hash, None)) is not None]
        if released:
            self._to_forward.extend(released)
            self._schedule_forward()

    def _schedule_forward(self) -> None:
        if self._forward_task is None or self._forward_task.done():
            self._forward_task = asyncio.ensure_future(self._flush_forward())

    async def _flush_forward(self) -> None:
        await asyncio.sleep(FORWARD_INTERVAL_S)  # batching window, not synchronisation
        while self._to_forward:
            count = self._batch_length(self._to_forward)
            batch = self._to_forward[:count]
            del self._to_forward[:count]
            self._forward(CHANNEL_TXS, encode_tx_batch([raw for raw, _ in batch]))
            self.log.info("tx.forwarded", txs=[digest.hex() for _, digest in batch],
                          count=count)

    def _batch_length(self, items: list[tuple[bytes, bytes]]) -> int:
        """How many of ``items`` (at least one) the next batch takes: a batch must pass
        the receiver's size check (the API's body limit) and fit a p2p frame, so it is
        bounded by bytes as well as by count."""
        size = count = 0
        for raw, _ in items[:TX_BATCH_TXS_MAX]:
            if count and size + len(raw) > self.forward_bytes_max:
                break
            size += len(raw) + TX_BATCH_ITEM_OVERHEAD_BYTES
            count += 1
        return count

    def _batches(self, items: list[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
        start = 0
        while start < len(items):
            count = self._batch_length(items[start:start + TX_BATCH_TXS_MAX])
            yield items[start:start + count]
            start += count

    # -- forwarding again ----------------------------------------------------------

    def _backlog_ms(self) -> int:
        """How long the pool takes to drain at the recent commit rate (``drain_tps``),
        at most ``REFORWARD_BACKLOG_MAX_MS``; 0 when nothing commits. A
        transaction waiting its turn behind the pool was not lost: forwarding it again
        waits until it is older than ``reforward_after_ms`` plus this (issue 16: a
        20,000-transaction burst was forwarded again 25,500 times while it drained,
        each copy decoded and hashed by 3 peers that held it). When nothing commits (a
        partition, a cut-off primary) a lost forward is the likely reason a
        transaction waits, and nothing is deferred."""
        if self._drain_tps is None or not len(self.mempool):
            return 0
        tps = self._drain_tps()
        if tps <= 0:
            return 0
        return min(int(len(self.mempool) * 1000 / tps), REFORWARD_BACKLOG_MAX_MS)

    def _resend_later(self, digest: bytes, now_ms: int, interval_ms: int) -> None:
        due = now_ms + interval_ms
        self._resend_at[digest] = due
        heapq.heappush(self._resend_heap, (due, digest, interval_ms))

    def resend(self, now_ms: int) -> int:
        """Forward again our clients' transactions that are due (a forward may have been
        lost: a partition, a peer restarting): first ``reforward_after_ms`` after
        arrival, then twice as long after each time (at most
        ``MEMPOOL_REFORWARD_INTERVAL_MAX_MS``), until the transaction leaves the pool. A
        gapped one is not sent (it goes once runnable) and is looked at again after the
        same interval; nor is one waiting its turn behind the pool, younger than
        ``reforward_after_ms`` plus the time the pool takes to drain (``_backlog_ms``):
        it is looked at again when it is that old, at the earliest
        ``reforward_after_ms`` later (the estimate moves). Then a shard peer that connected
        since the last call is sent the pool's runnable transactions. Returns how many
        were queued to forward again."""
        heap = self._resend_heap
        due_items: list[PendingTx] = []
        backlog_ms = self._backlog_ms()
        while heap and heap[0][0] <= now_ms and len(due_items) < REFORWARD_TXS_PER_ROUND_MAX:
            due, digest, interval = heapq.heappop(heap)
            if self._resend_at.get(digest) != due:
                continue  # superseded by a later entry
            item = self.mempool.get(digest)
            if item is None:  # committed, or left the pool
                del self._resend_at[digest]
                continue
            if not self.mempool.is_gapped(digest):
                if now_ms - item.arrival_ms < self.reforward_after_ms + backlog_ms:
                    # Waiting its turn behind the pool: looked at again once that old,
                    # and not before ``reforward_after_ms`` from now (a backlog estimate
                    # that grows about as fast as time passes made every deferred entry
                    # due again at each pass: 4 % of a node's busy samples, issue 16).
                    self._resend_later(digest, max(item.arrival_ms + backlog_ms,
                                                   now_ms + self.reforward_after_ms - interval),
                                       interval)
                    continue
                due_items.append(item)
                interval = min(2 * interval, defaults.MEMPOOL_REFORWARD_INTERVAL_MAX_MS)
            self._resend_later(digest, now_ms, interval)
        if due_items:
            due_items.sort(key=lambda item: (item.sender, item.nonce))  # nonce order
            self._to_forward.extend((encode(item.tx), item.tx_hash) for item in due_items)
            self.log.info("tx.reforwarded", count=len(due_items),
                          txs=[item.tx_hash.hex() for item in due_items])
            self._schedule_forward()
        self._greet_peers()
        return len(due_items)

    def _greet_peers(self) -> None:
        """A validator of the shard that connected since the last look (a restart, a
        dropped connection) gets the pool's runnable transactions (bounded): what was
        forwarded while it was away never reached it."""
        if self._shard_peers is None or self._send_to is None:
            return
        connected = self._shard_peers()
        new, self._peers_seen = connected - self._peers_seen, connected
        if not new or not len(self.mempool):
            return
        items = [(encode(item.tx), item.tx_hash) for item in self.mempool.ready(
            RECONNECT_RESEND_TXS_MAX, RECONNECT_RESEND_BYTES_MAX)]
        for peer in sorted(new):
            for batch in self._batches(items):
                self._send_to(peer, CHANNEL_TXS, encode_tx_batch([raw for raw, _ in batch]))
            if items:
                self.log.info("tx.sent_to_peer", peer=peer, count=len(items),
                              reason="connected")

    async def run_resend(self) -> None:
        """``resend`` every quarter of ``reforward_after_ms``, for the node's lifetime."""
        while True:
            await asyncio.sleep(self.reforward_after_ms / 4000)
            self.resend(self.clock.monotonic_ms())

    def stop(self) -> None:
        for task in (*self._background, self._forward_task):
            if task is not None:
                task.cancel()
        self.verify_pool.close()
