"""The mempool: admitted transactions waiting for a block.

Bounded by count and bytes; de-duplicated by hash; per sender ordered by nonce;
only nonces inside a window above the sender's committed nonce are admitted.

A sender's transactions are *runnable* from its committed nonce up to the first
missing nonce; those above a missing nonce are *gapped*: they cannot run until the
gap fills. Gapped transactions are bounded apart (issue 14 finding 2: 50,000 txs at
nonce 1 from fresh keys filled the pool and starved honest senders): at most
``gapped_sender_txs_max`` per sender and ``gapped_txs_max`` in all, and a full pool
evicts them, oldest gapped first, before it refuses a runnable transaction.
``on_runnable`` hears of gapped transactions that became runnable (admission
forwards a client's transaction only then).

A full pool refuses (the API answers 503 with Retry-After): an accepted
transaction is never dropped silently. It leaves the pool by being committed, or
made impossible by a committed nonce (``nonce_used``), or by expiring while gapped
(``expired_gapped``), or evicted while gapped (``evicted_gapped``), or, when it is
its sender's next transaction after a commit, refused by ``head_problem`` (a sender
that can no longer pay); every such removal is returned as a ``Removed`` with its
reason, evictions by the next ``expire``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from consensus.kernel.errors import ShardnetError
from node import defaults


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


@dataclass(slots=True)
class _Sender:
    """One sender's pending transactions and where its runnable run ends."""

    txs: dict[int, PendingTx]
    base: int  # the committed nonce when ``end`` was computed
    end: int  # the first nonce from ``base`` on that is not pending
    checked: int  # the committed nonce when ``head_problem`` last saw the next transaction
    gapped: int = 0  # pending transactions above ``end``


class Mempool:
    def __init__(
        self,
        *,
        txs_max: int,
        bytes_max: int,
        nonce_window: int,
        sender_txs_max: int,
        committed_nonce: Callable[[bytes], int],
        gapped_txs_max: int = defaults.MEMPOOL_GAPPED_TXS_MAX,
        gapped_sender_txs_max: int = defaults.MEMPOOL_GAPPED_SENDER_TXS_MAX,
    ) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self.nonce_window = nonce_window
        self.sender_txs_max = sender_txs_max
        self.gapped_txs_max = gapped_txs_max
        self.gapped_sender_txs_max = gapped_sender_txs_max
        self._committed_nonce = committed_nonce
        # Hooks (admission sets them): transactions that stopped being gapped, and why
        # a sender's next transaction can no longer run ("" if it can).
        self.on_runnable: Callable[[list[PendingTx]], None] | None = None
        self.head_problem: Callable[[Any], str] | None = None
        self._by_hash: dict[bytes, PendingTx] = {}
        # sender -> its transactions; senders in first-arrival order for fair selection.
        self._by_sender: OrderedDict[bytes, _Sender] = OrderedDict()
        # Gapped transactions in the order they became gapped (eviction: oldest first).
        self._gapped: dict[bytes, PendingTx] = {}
        self._gapped_bytes = 0
        self._evicted: list[Removed] = []  # reported by the next ``expire``
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> PendingTx | None:
        return self._by_hash.get(tx_hash)

    @property
    def gapped_count(self) -> int:
        return len(self._gapped)

    def is_gapped(self, tx_hash: bytes) -> bool:
        return tx_hash in self._gapped

    def room(self) -> tuple[int, int]:
        """At most how many more transactions and bytes the pool could take: its free
        places, counting gapped transactions as free (a runnable transaction evicts
        them). Admission refuses what cannot fit before checking it."""
        return (self.txs_max - len(self._by_hash) + len(self._gapped),
                self.bytes_max - self.size_bytes + self._gapped_bytes)

    def add(self, item: PendingTx) -> list[Removed]:
        """Admit ``item`` or raise a typed ``MempoolError`` with the reason; return the
        gapped transactions evicted to make room for it (also reported by ``expire``)."""
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
        sender = self._by_sender.get(item.sender)
        # Verify no other pending transaction holds this nonce.
        if sender is not None and item.nonce in sender.txs:
            raise DuplicateTx(f"nonce {item.nonce} already pending for this sender",
                              reason="nonce_taken")
        if sender is not None and sender.base != base:
            self._refresh(item.sender, sender, base)
        end = base if sender is None else sender.end
        gapped = item.nonce != end
        full = self._is_full_with(len(self._by_hash) + 1, self.size_bytes + item.size_bytes)
        if gapped:
            # Verify a gapped transaction stays within its share: of its sender's and of all.
            if sender is not None and sender.gapped >= self.gapped_sender_txs_max:
                raise MempoolFull(f"sender has {sender.gapped} gapped txs (nonce ahead of its "
                                  f"next nonce {end})", reason="sender_full")
            if len(self._gapped) >= self.gapped_txs_max:
                raise MempoolFull(f"gapped txs (nonce ahead of the sender's next nonce) hold "
                                  f"{len(self._gapped)} of {self.gapped_txs_max} places")
            # Verify there is room (a gapped transaction never evicts).
            if full:
                self._check_room(item, 0, 0)
        elif full:
            # Verify there is room once gapped transactions are evicted (not the sender's
            # own: this one may be about to make them runnable).
            own = [] if sender is None else [t for t in sender.txs.values()
                                             if t.tx_hash in self._gapped]
            self._check_room(item, len(self._gapped) - len(own),
                             self._gapped_bytes - sum(t.size_bytes for t in own))
        # Verify the sender stays within its share of the pool.
        if sender is not None and len(sender.txs) >= self.sender_txs_max:
            raise MempoolFull(f"sender has {len(sender.txs)} pending txs", reason="sender_full")
        evicted = self._evict_for(item) if full and not gapped else []
        if sender is None:
            # Admission checked the sender against the committed state: its next
            # transaction is asked about again once the committed nonce moves.
            sender = self._by_sender[item.sender] = _Sender({}, base, base, base)
        sender.txs[item.nonce] = item
        self._by_hash[item.tx_hash] = item
        self.size_bytes += item.size_bytes
        if gapped:
            self._mark_gapped(sender, item)
        else:
            self._extend_run(sender)
        return evicted

    def _is_full_with(self, count: int, size: int) -> bool:
        return count > self.txs_max or size > self.bytes_max

    def _check_room(self, item: PendingTx, evictable_txs: int, evictable_bytes: int) -> None:
        """Raise ``MempoolFull`` unless ``item`` fits once the evictable transactions
        are gone (nothing is evicted here)."""
        count = len(self._by_hash) + 1 - evictable_txs
        size = self.size_bytes + item.size_bytes - evictable_bytes
        if self._is_full_with(count, size):
            raise MempoolFull(f"mempool holds {len(self._by_hash)} txs, {self.size_bytes} bytes")

    def _evict_for(self, item: PendingTx) -> list[Removed]:
        """Evict gapped transactions, oldest gapped first, until ``item`` fits
        (``_check_room`` made sure it then does)."""
        over_txs = len(self._by_hash) + 1 - self.txs_max
        over_bytes = self.size_bytes + item.size_bytes - self.bytes_max
        victims: list[PendingTx] = []
        for victim in self._gapped.values():
            if over_txs <= 0 and over_bytes <= 0:
                break
            if victim.sender != item.sender:
                victims.append(victim)
                over_txs -= 1
                over_bytes -= victim.size_bytes
        for victim in victims:
            self._discard(victim)
        evicted = [Removed(victim, "evicted_gapped") for victim in victims]
        self._evicted.extend(evicted)
        if len(self._evicted) > self.gapped_txs_max:  # bounded until reported (and logged)
            del self._evicted[: len(self._evicted) - self.gapped_txs_max]
        return evicted

    def _mark_gapped(self, sender: _Sender, item: PendingTx) -> None:
        sender.gapped += 1
        self._gapped[item.tx_hash] = item
        self._gapped_bytes += item.size_bytes

    def _unmark_gapped(self, sender: _Sender, item: PendingTx) -> bool:
        if self._gapped.pop(item.tx_hash, None) is None:
            return False
        sender.gapped -= 1
        self._gapped_bytes -= item.size_bytes
        return True

    def _extend_run(self, sender: _Sender) -> None:
        """Move ``end`` past the pending nonces that now continue the run; report the
        gapped transactions it reached."""
        promoted: list[PendingTx] = []
        while sender.end in sender.txs:
            item = sender.txs[sender.end]
            if self._unmark_gapped(sender, item):
                promoted.append(item)
            sender.end += 1
        if promoted and self.on_runnable is not None:
            self.on_runnable(promoted)

    def _refresh(self, address: bytes, sender: _Sender, base: int) -> None:
        """Recompute a sender's run from its committed nonce ``base`` (a commit moved
        it): transactions past a new gap become gapped, those the run reaches runnable."""
        sender.base = base
        end = base
        while end in sender.txs:
            end += 1
        sender.end = end
        if not sender.gapped and len(sender.txs) == end - base:
            # Every pending nonce is in the run and none was gapped: nothing to mark or
            # promote (the common case after a commit; the loop below made this pass
            # O(sender's pending) per commit, 2 % of a node's busy samples under a burst).
            return
        promoted: list[PendingTx] = []
        for nonce in sorted(sender.txs):
            item = sender.txs[nonce]
            if nonce > end:
                if item.tx_hash not in self._gapped:
                    self._mark_gapped(sender, item)
            elif self._unmark_gapped(sender, item) and nonce >= base:
                promoted.append(item)
        if promoted and self.on_runnable is not None:
            self.on_runnable(promoted)

    def ready(self, txs_max: int, bytes_max: int,
              nonce_of: Callable[[bytes], int] | None = None) -> list[PendingTx]:
        """Executable transactions for a block: per sender a gap-free nonce run
        from the committed nonce; senders interleaved round-robin, the sender whose
        next transaction arrived first first. So the oldest executable transaction is
        always taken (the request timer restarts only when that oldest work is served:
        PROTOCOL.md 4), also with more senders waiting than a block holds; ordered by
        when a sender's run began (the pool's insertion order, as before), a sender
        that always had something waiting kept its place ahead of later ones and more
        than ``txs_max`` such senders starved the rest.
        ``nonce_of`` (pipelining): each sender's next nonce on the block the proposal
        builds on, so the transactions of the blocks in flight are not offered again."""
        runs: list[list[PendingTx]] = []
        next_nonce = self._committed_nonce if nonce_of is None else nonce_of
        for address, sender in self._by_sender.items():
            queue = sender.txs
            nonce = next_nonce(address)
            run: list[PendingTx] = []
            while nonce in queue:
                run.append(queue[nonce])
                nonce += 1
            if run:
                runs.append(run)
        runs.sort(key=lambda run: run[0].arrival_ms)  # stable: ties keep the pool's order
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
                self._discard(item, refresh=False)  # ``remove_stale`` recomputes the run
                touched.add(item.sender)
        return self.remove_stale(touched)

    def remove_stale(self, senders: Iterable[bytes]) -> list[Removed]:
        """Drop pending transactions of ``senders`` whose nonce is now committed, and
        a next transaction ``head_problem`` refuses; recompute their runs."""
        removed: list[Removed] = []
        for address in senders:
            sender = self._by_sender.get(address)
            if sender is not None:
                removed.extend(self._settle(address, sender, self._committed_nonce(address)))
        return removed

    def _settle(self, address: bytes, sender: _Sender, base: int) -> list[Removed]:
        """A sender whose committed nonce is ``base``: drop its used nonces; if the
        committed nonce moved, ask ``head_problem`` about its next transaction (only a
        commit of its own transactions lowers a sender's balance); recompute its run."""
        removed: list[Removed] = []
        for item in [i for n, i in sender.txs.items() if n < base]:
            removed.append(Removed(item, "nonce_used"))
        head = sender.txs.get(base)
        if head is not None and self.head_problem is not None and sender.checked != base:
            problem = self.head_problem(head.tx)
            if problem:
                removed.append(Removed(head, problem))
        sender.checked = base
        for entry in removed:
            self._discard(entry.tx, refresh=False)
        if address in self._by_sender:
            self._refresh(address, sender, base)
        return removed

    def expire(self, now_ms: int, ttl_ms: int) -> list[Removed]:
        """Settle every sender against its committed nonce (a commit of a transaction
        this pool never held moves it too), drop gapped transactions older than
        ``ttl_ms``, and report those evicted since the last call."""
        removed, self._evicted = self._evicted, []
        for address, sender in list(self._by_sender.items()):
            base = self._committed_nonce(address)
            if base != sender.checked or any(n < base for n in sender.txs):
                removed.extend(self._settle(address, sender, base))
        old = [item for item in self._gapped.values() if now_ms - item.arrival_ms > ttl_ms]
        for item in old:
            self._discard(item)
            removed.append(Removed(item, "expired_gapped"))
        return removed

    def oldest_arrival_ms(self) -> int | None:
        return min((item.arrival_ms for item in self._by_hash.values()), default=None)

    def oldest_ready_arrival_ms(self) -> int | None:
        """Arrival of the oldest executable transaction: pending work a primary owes."""
        oldest: int | None = None
        for address, sender in self._by_sender.items():
            head = sender.txs.get(self._committed_nonce(address))
            if head is not None and (oldest is None or head.arrival_ms < oldest):
                oldest = head.arrival_ms
        return oldest

    def _discard(self, item: PendingTx, *, refresh: bool = True) -> None:
        """Remove ``item``; a transaction inside its sender's run makes those after it
        gapped (recomputed here with ``refresh``, else by the caller)."""
        del self._by_hash[item.tx_hash]
        self.size_bytes -= item.size_bytes
        sender = self._by_sender[item.sender]
        del sender.txs[item.nonce]
        self._unmark_gapped(sender, item)
        if not sender.txs:
            del self._by_sender[item.sender]
        elif refresh and sender.base <= item.nonce < sender.end:
            self._refresh(item.sender, sender, sender.base)
