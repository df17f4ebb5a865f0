"""``shardnet bench node`` waits the 503's ``Retry-After`` before submitting again
(issue 16, deliverable 2: with refusals cheap, retrying every 50 ms made 967,500
retries of a 60,000-transaction burst)."""

from __future__ import annotations

import pytest

from scripts.bench.node import RETRY_AFTER_MAX_S, retry_after_s


@pytest.mark.parametrize(("header", "seconds"), [
    ("1", 1.0), ("0.5", 0.5), ("30", RETRY_AFTER_MAX_S), ("0", 0.05), (None, 0.05),
    ("soon", 0.05), ("nan", 0.05), ("-3", 0.05)])
def test_retry_after_is_honoured_and_bounded(header: str | None, seconds: float) -> None:
    assert retry_after_s(header) == seconds
