from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
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
