"""The mempool: admitted transactions waiting for a block.

Bounded by count and bytes; de-duplicated by hash; per sender ordered by nonce;
only nonces inside a window above the sender's committed nonce are admitted.
A full pool refuses (the API answers 503 with Retry-After): an accepted
transaction is never dropped silently. It leaves the pool only by being
committed, or by being made impossible by a committed nonce (then it is
reported with that reason), or by expiring while gapped (reported too).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from consensus.kernel.errors import ShardnetError


class MempoolError(ShardnetError):
    reason = "mempool"


class MempoolFull(MempoolError):
    reason = "mempool_full"


class DuplicateTx(MempoolError):
    reason = "duplicate"


class NonceOutOfWindow(MempoolError):
    reason = "wrong_nonce"


@dataclass(frozen=True, slots=True)
class PendingTx:
    tx_hash: bytes
    sender: bytes
    nonce: int
    size_bytes: int
    arrival_ms: int
    tx: Any = field(compare=False)


@dataclass(frozen=True, slots=True)
class Removed:
    """A transaction that left the pool without being committed, and why."""

    tx: PendingTx
    reason: str


class Mempool:
    def __init__(
        self,
        *,
        txs_max: int,
        bytes_max: int,
        nonce_window: int,
        sender_txs_max: int,
        committed_nonce: Callable[[bytes], int],
    ) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self.nonce_window = nonce_window
        self.sender_txs_max = sender_txs_max
        self._committed_nonce = committed_nonce
        self._by_hash: dict[bytes, PendingTx] = {}
        # sender -> {nonce: tx}; senders in first-arrival order for fair selection.
        self._by_sender: OrderedDict[bytes, dict[int, PendingTx]] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> PendingTx | None:
        return self._by_hash.get(tx_hash)

    def add(self, item: PendingTx) -> None:
        """Admit ``item`` or raise a typed ``MempoolError`` with the reason."""
        # Verify the transaction is new.
        if item.tx_hash in self._by_hash:
            raise DuplicateTx("transaction already pending")
        base = self._committed_nonce(item.sender)
        # Verify the nonce is not used and not too far ahead.
        if item.nonce < base:
            raise NonceOutOfWindow(f"nonce {item.nonce} already used (next is {base})")
        if item.nonce >= base + self.nonce_window:
            raise NonceOutOfWindow(
                f"nonce {item.nonce} is beyond the window (next is {base}, "
                f"window {self.nonce_window})"
            )
        queue = self._by_sender.get(item.sender)
        # Verify no other pending transaction holds this nonce.
        if queue is not None and item.nonce in queue:
            raise DuplicateTx(f"nonce {item.nonce} already pending for this sender",
                              reason="nonce_taken")
        # Verify there is room.
        if len(self._by_hash) >= self.txs_max or self.size_bytes + item.size_bytes > self.bytes_max:
            raise MempoolFull(f"mempool holds {len(self._by_hash)} txs, {self.size_bytes} bytes")
        if queue is not None and len(queue) >= self.sender_txs_max:
            raise MempoolFull(f"sender has {len(queue)} pending txs", reason="sender_full")
        if queue is None:
            queue = self._by_sender[item.sender] = {}
        queue[item.nonce] = item
        self._by_hash[item.tx_hash] = item
        self.size_bytes += item.size_bytes

    def ready(self, txs_max: int, bytes_max: int) -> list[PendingTx]:
        """Executable transactions for a block: per sender a gap-free nonce run
        from the committed nonce; senders interleaved round-robin in arrival order."""
        runs: list[list[PendingTx]] = []
        for sender, queue in self._by_sender.items():
            nonce = self._committed_nonce(sender)
            run: list[PendingTx] = []
            while nonce in queue:
                run.append(queue[nonce])
                nonce += 1
            if run:
                runs.append(run)
        selected: list[PendingTx] = []
        size = 0
        depth = 0
        while runs and len(selected) < txs_max:
            next_runs = []
            for run in runs:
                if depth >= len(run):
                    continue
                item = run[depth]
                if size + item.size_bytes > bytes_max or len(selected) >= txs_max:
                    return selected
                selected.append(item)
                size += item.size_bytes
                next_runs.append(run)
            runs = next_runs
            depth += 1
        return selected

    def remove_committed(self, tx_hashes: Iterable[bytes]) -> list[Removed]:
        """Drop committed transactions, then those whose nonce a commit made stale."""
        touched: set[bytes] = set()
        for tx_hash in tx_hashes:
            item = self._by_hash.get(tx_hash)
            if item is not None:
                self._discard(item)
                touched.add(item.sender)
        return self.remove_stale(touched)

    def remove_stale(self, senders: Iterable[bytes]) -> list[Removed]:
        """Drop pending transactions of ``senders`` whose nonce is now committed."""
        removed: list[Removed] = []
        for sender in senders:
            base = self._committed_nonce(sender)
            for item in [i for n, i in self._by_sender.get(sender, {}).items() if n < base]:
                self._discard(item)
                removed.append(Removed(item, "nonce_used"))
        return removed

    def expire(self, now_ms: int, ttl_ms: int) -> list[Removed]:
        """Drop gapped (not executable) transactions older than ``ttl_ms``."""
        executable = {item.tx_hash for item in self.ready(len(self._by_hash) + 1, 2**62)}
        removed = [
            Removed(item, "expired_gapped")
            for item in self._by_hash.values()
            if item.tx_hash not in executable and now_ms - item.arrival_ms > ttl_ms
        ]
        for entry in removed:
            self._discard(entry.tx)
        return removed

    def oldest_arrival_ms(self) -> int | None:
        return min((item.arrival_ms for item in self._by_hash.values()), default=None)

    def oldest_ready_arrival_ms(self) -> int | None:
        """Arrival of the oldest executable transaction: pending work a primary owes."""
        oldest: int | None = None
        for sender, queue in self._by_sender.items():
            head = queue.get(self._committed_nonce(sender))
            if head is not None and (oldest is None or head.arrival_ms < oldest):
                oldest = head.arrival_ms
        return oldest

    def _discard(self, item: PendingTx) -> None:
        del self._by_hash[item.tx_hash]
        self.size_bytes -= item.size_bytes
        queue = self._by_sender[item.sender]
        del queue[item.nonce]
        if not queue:
            del self._by_sender[item.sender]
