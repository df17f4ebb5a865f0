from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.mempool import DuplicateTx, Mempool, MempoolFull, NonceOutOfWindow, PendingTx


def make_pool(committed: dict[bytes, int] | None = None, **limits: int) -> Mempool:
    nonces = committed if committed is not None else {}
    return Mempool(
        txs_max=limits.get("txs_max", 100),
        bytes_max=limits.get("bytes_max", 10_000),
        nonce_window=limits.get("nonce_window", 10),
        sender_txs_max=limits.get("sender_txs_max", 50),
        committed_nonce=lambda sender: nonces.get(sender, 0),
    )


def tx(sender: bytes, nonce: int, size: int = 100, arrival: int = 0) -> PendingTx:
    return PendingTx(bytes([len(sender)]) + sender + nonce.to_bytes(4, "big"), sender, nonce,
                     size, arrival, None)


def test_ready_returns_gap_free_runs_interleaved_by_sender() -> None:
    pool = make_pool()
    for item in [tx(b"a", 1), tx(b"a", 0), tx(b"b", 0), tx(b"c", 1)]:
        pool.add(item)
    ready = pool.ready(10, 10_000)
    assert [(t.sender, t.nonce) for t in ready] == [(b"a", 0), (b"b", 0), (b"a", 1)]


def commit(pool: Mempool, nonces: dict[bytes, int], block: list[PendingTx]) -> None:
    for item in block:
        nonces[item.sender] = item.nonce + 1
    pool.remove_committed(item.tx_hash for item in block)


def test_a_later_sender_is_served_before_busy_senders_that_were_there_first() -> None:
    """More senders waiting than a block holds: the sender whose next transaction is
    the oldest goes first, not the ones that kept the pool's earlier places."""
    nonces: dict[bytes, int] = {}
    pool = make_pool(nonces, txs_max=1_000)
    for nonce in range(5):
        for name in (b"a", b"b"):
            pool.add(tx(name, nonce, arrival=10 * nonce))
    pool.add(tx(b"c", 0, arrival=5))  # after a's and b's first, before their second
    first = pool.ready(2, 10_000)
    assert [(t.sender, t.nonce) for t in first] == [(b"a", 0), (b"b", 0)]
    commit(pool, nonces, first)
    second = pool.ready(2, 10_000)
    assert (second[0].sender, second[0].nonce) == (b"c", 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4)), min_size=1, max_size=60),
       st.integers(1, 8))
def test_every_block_takes_the_oldest_executable_transaction(
        arrivals: list[tuple[int, int]], block_txs: int) -> None:
    """The property the request timer relies on (PROTOCOL.md 4): while work waits, each
    block an honest primary builds holds the oldest executable transaction, so the
    oldest pending time moves forward block by block."""
    nonces: dict[bytes, int] = {}
    pool = make_pool(nonces, txs_max=1_000, nonce_window=1_000, sender_txs_max=1_000,
                     bytes_max=1_000_000)
    clock = 0
    added: dict[bytes, int] = {}
    for index, (gap, count) in enumerate(arrivals):
        clock += gap
        name = bytes([index % 7 + 1]) * 4
        for _ in range(count):
            pool.add(tx(name, added.get(name, 0), arrival=clock))
            added[name] = added.get(name, 0) + 1
    while len(pool):
        oldest = pool.oldest_ready_arrival_ms()
        block = pool.ready(block_txs, 1_000_000)
        assert block and block[0].arrival_ms == oldest
        commit(pool, nonces, block)


def test_full_pool_rejects_with_mempool_full() -> None:
    pool = make_pool(txs_max=2)
    pool.add(tx(b"a", 0))
    pool.add(tx(b"a", 1))
    with pytest.raises(MempoolFull):
        pool.add(tx(b"b", 0))
    assert len(pool) == 2


def test_byte_bound_rejects_with_mempool_full() -> None:
    pool = make_pool(bytes_max=150)
    pool.add(tx(b"a", 0))
    with pytest.raises(MempoolFull):
        pool.add(tx(b"b", 0))


def test_duplicate_hash_rejected() -> None:
    pool = make_pool()
    pool.add(tx(b"a", 0))
    with pytest.raises(DuplicateTx):
        pool.add(tx(b"a", 0))


def test_used_nonce_rejected_as_wrong_nonce() -> None:
    pool = make_pool({b"a": 5})
    with pytest.raises(NonceOutOfWindow, match="already used"):
        pool.add(tx(b"a", 4))


def test_nonce_beyond_window_rejected() -> None:
    pool = make_pool(nonce_window=3)
    with pytest.raises(NonceOutOfWindow, match="beyond the window"):
        pool.add(tx(b"a", 3))


def test_commit_removes_committed_and_reports_stale() -> None:
    committed = {b"a": 0}
    pool = make_pool(committed)
    first, rival = tx(b"a", 0), tx(b"a", 1)
    pool.add(first)
    pool.add(rival)
    committed[b"a"] = 2  # both nonces consumed, only ``first`` by this pool's tx
    removed = pool.remove_committed([first.tx_hash])
    assert [(r.tx, r.reason) for r in removed] == [(rival, "nonce_used")]
    assert len(pool) == 0 and pool.size_bytes == 0


def test_expire_drops_only_gapped_old_transactions() -> None:
    pool = make_pool()
    ready, gapped = tx(b"a", 0, arrival=0), tx(b"b", 3, arrival=0)
    pool.add(ready)
    pool.add(gapped)
    removed = pool.expire(now_ms=10_000, ttl_ms=1_000)
    assert [r.tx for r in removed] == [gapped]
    assert ready.tx_hash in pool


@given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.integers(0, 12)), max_size=60))
def test_accounting_stays_consistent(ops: list[tuple[bytes, int]]) -> None:
    pool = make_pool(txs_max=20, bytes_max=1_500)
    for sender, nonce in ops:
        with contextlib.suppress(MempoolFull, DuplicateTx, NonceOutOfWindow):
            pool.add(tx(sender, nonce))
        assert len(pool) <= 20 and pool.size_bytes <= 1_500
        assert pool.size_bytes == 100 * len(pool)
    ready = pool.ready(1000, 10**9)
    assert len({t.tx_hash for t in ready}) == len(ready)


# -- gapped transactions (issue 14 finding 2): a nonce ahead of the sender's next one


def gapped_pool(committed: dict[bytes, int] | None = None, **limits: int) -> Mempool:
    pool = make_pool(committed, **limits)
    pool.gapped_txs_max = limits.get("gapped_txs_max", 10)
    pool.gapped_sender_txs_max = limits.get("gapped_sender_txs_max", 3)
    return pool


def sender(i: int) -> bytes:
    return i.to_bytes(4, "big")


def test_gapped_flood_does_not_starve_runnable_txs() -> None:
    """50,000 txs at nonce 1 from fresh keys filled the pool: now they get their share
    (``gapped_txs_max``) and every honest runnable transaction still gets in."""
    pool = gapped_pool(txs_max=100, bytes_max=10**6, gapped_txs_max=10)
    refused = 0
    for i in range(1_000):
        try:
            pool.add(tx(sender(i), 1))
        except MempoolFull as exc:
            assert exc.reason == "mempool_full"
            refused += 1
    assert (len(pool), pool.gapped_count, refused) == (10, 10, 990)
    for i in range(1_000, 1_090):
        pool.add(tx(sender(i), 0))  # never refused: 90 = txs_max - the gapped share
    assert len(pool.ready(1_000, 10**9)) == 90


def test_a_sender_holds_at_most_its_gapped_share() -> None:
    pool = gapped_pool(gapped_sender_txs_max=3)
    for nonce in (2, 3, 4):
        pool.add(tx(b"a", nonce))
    with pytest.raises(MempoolFull) as caught:
        pool.add(tx(b"a", 5))
    assert caught.value.reason == "sender_full"
    pool.add(tx(b"a", 0))  # runnable: never limited by the gapped share
    assert pool.gapped_count == 3


def test_gapped_txs_are_evicted_before_runnable_ones_are_refused() -> None:
    pool = gapped_pool(txs_max=10, gapped_txs_max=4, gapped_sender_txs_max=1)
    gapped = [tx(sender(i), 1, arrival=i) for i in range(4)]
    for item in gapped:
        pool.add(item)
    for i in range(10, 16):
        pool.add(tx(sender(i), 0))
    assert len(pool) == 10
    # Full: a runnable transaction evicts the oldest gapped one instead of being refused.
    evicted = pool.add(tx(sender(20), 0))
    assert [(r.tx, r.reason) for r in evicted] == [(gapped[0], "evicted_gapped")]
    # A gapped one never evicts: refused.
    with pytest.raises(MempoolFull):
        pool.add(tx(sender(21), 1))
    for i in range(21, 24):
        pool.add(tx(sender(i), 0))
    assert pool.gapped_count == 0 and len(pool) == 10
    # Nothing left to evict: now a runnable transaction is refused.
    with pytest.raises(MempoolFull):
        pool.add(tx(sender(30), 0))
    # Every eviction is reported (the node's housekeeping marks them rejected).
    reported = pool.expire(now_ms=0, ttl_ms=60_000)
    assert [r.tx for r in reported] == gapped and {r.reason for r in reported} == {
        "evicted_gapped"}


def test_a_runnable_tx_does_not_evict_its_own_senders_gapped_txs() -> None:
    """They may be about to become runnable through it; other senders' go first."""
    pool = gapped_pool(txs_max=3)
    own, other = tx(b"a", 1, arrival=0), tx(b"b", 1, arrival=1)
    pool.add(own)
    pool.add(other)
    pool.add(tx(b"c", 0))
    evicted = pool.add(tx(b"a", 0))
    assert [r.tx for r in evicted] == [other]
    assert [t.nonce for t in pool.ready(10, 10**9) if t.sender == b"a"] == [0, 1]
    # Only the sender's own gapped transactions are there to evict: refused, none evicted.
    pool = gapped_pool(txs_max=3)
    for item in (tx(b"a", 2), tx(b"c", 0), tx(b"e", 0)):
        pool.add(item)
    with pytest.raises(MempoolFull):
        pool.add(tx(b"a", 0))
    assert len(pool) == 3 and pool.gapped_count == 1


def test_bytes_full_pool_evicts_gapped_bytes_for_a_runnable_tx() -> None:
    pool = gapped_pool(txs_max=100, bytes_max=1_000)
    pool.add(tx(b"g", 1, size=600))
    pool.add(tx(b"r", 0, size=300))
    evicted = pool.add(tx(b"s", 0, size=500))
    assert [r.tx.sender for r in evicted] == [b"g"] and pool.size_bytes == 800


def test_runnable_tx_that_cannot_fit_even_after_eviction_evicts_nothing() -> None:
    pool = gapped_pool(txs_max=100, bytes_max=1_000)
    pool.add(tx(b"g", 1, size=100))
    pool.add(tx(b"r", 0, size=800))
    with pytest.raises(MempoolFull):
        pool.add(tx(b"s", 0, size=300))
    assert pool.gapped_count == 1 and len(pool) == 2


def test_filling_the_gap_reports_the_gapped_txs_runnable_in_nonce_order() -> None:
    pool = gapped_pool()
    runnable: list[PendingTx] = []
    pool.on_runnable = runnable.extend
    later = [tx(b"a", 2), tx(b"a", 1)]
    for item in later:
        pool.add(item)
    assert runnable == [] and pool.gapped_count == 2
    pool.add(tx(b"a", 0))
    assert [t.nonce for t in runnable] == [1, 2] and pool.gapped_count == 0


def test_a_commit_this_pool_never_held_makes_gapped_txs_runnable() -> None:
    committed = {b"a": 0}
    pool = gapped_pool(committed)
    runnable: list[PendingTx] = []
    pool.on_runnable = runnable.extend
    pool.add(tx(b"a", 1))
    committed[b"a"] = 1  # nonce 0 committed through another validator's mempool
    assert pool.expire(now_ms=0, ttl_ms=60_000) == []
    assert [t.nonce for t in runnable] == [1] and pool.gapped_count == 0


def test_a_sender_next_tx_that_can_no_longer_pay_leaves_after_the_commit() -> None:
    """A replica drops the transaction the primary refused (the sender spent its
    balance): otherwise it would count as work the primary owes (a view change)."""
    committed = {b"a": 0}
    pool = gapped_pool(committed)
    pool.head_problem = lambda _: "insufficient_balance"
    first, second, third = tx(b"a", 0), tx(b"a", 1), tx(b"a", 2)
    for item in (first, second, third):
        pool.add(item)
    committed[b"a"] = 1
    removed = pool.remove_committed([first.tx_hash])
    assert [(r.tx, r.reason) for r in removed] == [(second, "insufficient_balance")]
    assert pool.oldest_ready_arrival_ms() is None and pool.is_gapped(third.tx_hash)


def test_a_gapped_tx_expires_after_its_ttl_and_a_stale_one_is_reported_used() -> None:
    committed = {b"a": 0}
    pool = gapped_pool(committed)
    gapped, stale = tx(b"g", 1, arrival=0), tx(b"a", 0, arrival=0)
    pool.add(gapped)
    pool.add(stale)
    committed[b"a"] = 1  # another transaction of "a" used nonce 0
    removed = pool.expire(now_ms=500, ttl_ms=1_000)
    assert [(r.tx, r.reason) for r in removed] == [(stale, "nonce_used")]
    removed = pool.expire(now_ms=2_000, ttl_ms=1_000)
    assert [(r.tx, r.reason) for r in removed] == [(gapped, "expired_gapped")]
    assert len(pool) == 0 and pool.size_bytes == 0


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["add", "commit", "expire"]),
                          st.sampled_from([b"a", b"b", b"c", b"d"]), st.integers(0, 9)),
                max_size=80))
def test_gapped_bookkeeping_matches_a_recount(ops: list[tuple[str, bytes, int]]) -> None:
    """Whatever the adds, commits (of pooled or unknown transactions) and expiries,
    the gapped set is exactly the transactions above their sender's run, within
    both shares, and the pool within its bounds."""
    committed: dict[bytes, int] = {}
    pool = gapped_pool(committed, txs_max=12, bytes_max=1_100, gapped_txs_max=4,
                       gapped_sender_txs_max=2)
    reported: set[bytes] = set()
    pool.on_runnable = lambda items: reported.update(t.tx_hash for t in items)
    for op, who, nonce in ops:
        gapped_before = set(pool._gapped)
        if op == "add":
            with contextlib.suppress(MempoolFull, DuplicateTx, NonceOutOfWindow):
                pool.add(tx(who, committed.get(who, 0) + nonce % 5))
        elif op == "commit":
            base = committed.get(who, 0)
            head = pool.ready(1_000, 10**9)
            committed[who] = base + 1 + nonce % 2
            pool.remove_committed([t.tx_hash for t in head if t.sender == who
                                   and t.nonce < committed[who]])
        else:
            pool.expire(now_ms=nonce, ttl_ms=5)
        assert len(pool) <= 12 and pool.size_bytes == 100 * len(pool) <= 1_100
        assert pool.gapped_count <= 4
        pool.expire(now_ms=0, ttl_ms=10**9)  # settle unknown commits, as housekeeping does
        by_sender: dict[bytes, set[int]] = {}
        for item in [pool.get(h) for h in list(pool._by_hash)]:
            assert item is not None
            by_sender.setdefault(item.sender, set()).add(item.nonce)
        expected = set()
        for who_, nonces in by_sender.items():
            end = committed.get(who_, 0)
            assert min(nonces) >= end  # nothing stale after settling
            while end in nonces:
                end += 1
            expected |= {(who_, n) for n in nonces if n > end}
        actual = {(pool._gapped[h].sender, pool._gapped[h].nonce) for h in pool._gapped}
        assert actual == expected
        # Every pooled transaction is in its sender's queue and nowhere else.
        queued = {t.tx_hash for q in pool._by_sender.values() for t in q.txs.values()}
        assert queued == set(pool._by_hash)
        assert all(q.gapped == sum(t.tx_hash in pool._gapped for t in q.txs.values())
                   for q in pool._by_sender.values())
        # Every gapped transaction still pooled and no longer gapped was reported
        # runnable (the mempool's ``on_runnable``: admission forwards it then).
        assert {h for h in gapped_before if h in pool and h not in pool._gapped} <= reported
