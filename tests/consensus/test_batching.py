"""The batch policy (consensus/batching.py): when a primary cuts a block."""

from __future__ import annotations

from consensus.batching import batch_due


def test_never_an_empty_block() -> None:
    assert not batch_due(0, False, full_at=4, waited_ms=10_000, interval_ms=100)


def test_a_full_batch_goes_at_once() -> None:
    assert batch_due(4, False, full_at=4, waited_ms=0, interval_ms=100)
    assert not batch_due(3, False, full_at=4, waited_ms=99, interval_ms=100)


def test_some_work_goes_when_the_interval_has_passed() -> None:
    assert batch_due(1, False, full_at=4, waited_ms=100, interval_ms=100)


def test_inbound_receipts_alone_are_work() -> None:
    assert batch_due(0, True, full_at=4, waited_ms=100, interval_ms=100)
    assert not batch_due(0, True, full_at=4, waited_ms=99, interval_ms=100)
