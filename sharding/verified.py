"""The verified-signature cache: which signed transactions this node already checked.

A node verifies each transaction's signature once, when it arrives (admission),
and block building, block validation and commit then verify only what is not in
here (``sharding/ledger.py`` holds one, ``Ledger.verified``). Shared by the
admission and ledger threads, hence the lock; ``check_once`` also keeps two threads
from verifying the same signatures at the same time. A hint, never an input to an
outcome (tests/sharding/test_verified_hint.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from sharding.tx import SignedTx, tx_hash

VERIFIED_TXS_MAX = 200_000
# How long a verifier waits for each other thread verifying the same signatures.
CLAIM_WAIT_S = 30.0


def _signed_key(tx: SignedTx, digest: bytes | None = None) -> bytes:
    """What a verdict is about: the body (its hash) *and* the signature bytes. The
    transaction hash alone covers only the body, and a block commits to the signature
    bytes too (tx_root), so a copy with other signature bytes is checked again.
    ``digest`` is ``tx_hash(tx)`` when the caller has it already (hashed once)."""
    return (tx_hash(tx) if digest is None else digest) + tx.signature


class VerifiedTxs:
    """Hashes of transactions whose signature this node has already checked.

    A node verifies each transaction once, when it arrives (from a client or a
    shard peer), off the critical path; block building and block validation then
    check only what is not in here. The hash covers the signed body and the
    signature, so a hit is the same signed bytes. Bounded; shared by the admission
    and ledger threads, hence the lock. Callers that already hold a transaction's
    hash (admission, the mempool's candidates) pass it, so it is not hashed again.

    It is a hint, never an input to an outcome: a hit only skips re-verifying
    a signature this node found valid, and verifying it again would give the same
    answer (tests/sharding/test_verified_hint.py).
    """

    def __init__(self, capacity: int = VERIFIED_TXS_MAX) -> None:
        self.capacity = capacity
        self._hashes: OrderedDict[bytes, None] = OrderedDict()
        # Signatures being verified right now, each with its verifier's done event.
        self._claims: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()

    def add(self, tx: SignedTx, digest: bytes | None = None) -> None:
        key = _signed_key(tx, digest)
        with self._lock:
            self._remember(key)

    def holds(self, tx: SignedTx, digest: bytes | None = None) -> bool:
        """Whether ``tx``'s signature was verified (``digest``: its hash, if known)."""
        key = _signed_key(tx, digest)
        with self._lock:
            return key in self._hashes

    def check_once(self, txs: list[SignedTx], digests: list[bytes],
                   verify: Callable[[list[SignedTx]], list[bool]]) -> list[bool]:
        """Each signature's verdict, verifying (``verify``, one call) only those neither
        cached nor being verified by another thread right now.

        A replica's forwarded batch and the PRE-PREPARE carrying the same transactions
        often arrive together: admission and block validation each missed the cache
        and both verified (a whole block of a replica's transactions twice under load,
        issue 16). So a caller claims what it verifies; one that finds a signature
        claimed waits (bounded) for that verdict. A verdict is always
        ``verify``'s: a signature the other thread found bad, or one still pending
        after the wait, is verified here."""
        keys = [_signed_key(tx, digest) for tx, digest in zip(txs, digests, strict=True)]
        verdicts: list[bool | None] = [None] * len(txs)
        mine: list[int] = []
        theirs: list[int] = []
        done = threading.Event()
        events: dict[int, threading.Event] = {}
        with self._lock:
            for index, key in enumerate(keys):
                if key in self._hashes:
                    verdicts[index] = True
                elif (event := self._claims.get(key)) is not None:
                    theirs.append(index)
                    events[id(event)] = event
                else:
                    self._claims[key] = done
                    mine.append(index)
        try:
            for index, verified in zip(mine, verify([txs[k] for k in mine]), strict=True):
                verdicts[index] = verified
        finally:
            with self._lock:
                for index in mine:
                    if verdicts[index]:
                        self._remember(keys[index])
                    self._claims.pop(keys[index], None)
            done.set()
        for event in events.values():
            event.wait(CLAIM_WAIT_S)
        with self._lock:
            rest = [index for index in theirs if keys[index] not in self._hashes]
        for index in theirs:
            verdicts[index] = True
        for index, verified in zip(rest, verify([txs[k] for k in rest]) if rest else [],
                                   strict=True):
            verdicts[index] = verified
            if verified:
                with self._lock:
                    self._remember(keys[index])
        return [bool(v) for v in verdicts]

    def _remember(self, key: bytes) -> None:
        self._hashes[key] = None
        if len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)

    def __contains__(self, tx: object) -> bool:
        return isinstance(tx, SignedTx) and self.holds(tx)

    def __len__(self) -> int:
        return len(self._hashes)
