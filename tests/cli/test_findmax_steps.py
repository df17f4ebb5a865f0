"""The find-max's step verdicts (``scripts/cli/load/findmax.py``): keep-up is judged by
the rate while commits happened, not diluted by the latency, and a step at a low rate
runs long enough for its p99 to be a percentile."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.cli.load.findmax import STEP_SAMPLES_MIN, Limits, judge, step_seconds
from scripts.cli.load.stats import commit_rate


def blocks(rate: float, seconds: float, interval: float, latency: float) -> list[float]:
    """Commit times of a shard cutting a block every ``interval`` of what arrived at
    ``rate`` since the last one, each committed ``latency`` after its cut."""
    times: list[float] = []
    cut = interval
    while cut <= seconds + 1e-9:
        times += [cut + latency] * round(rate * interval)
        cut += interval
    return times


@settings(max_examples=80, deadline=None)
@given(st.floats(20, 2_000), st.floats(0.05, 0.5), st.floats(0.0, 2.0))
def test_a_kept_up_rate_reads_as_itself_whatever_the_latency(
        rate: float, interval: float, latency: float) -> None:
    times = blocks(rate, 3.0, interval, latency)
    measured = commit_rate(times)
    if len({*times}) < 2:
        assert measured is None
        return
    assert measured == pytest.approx(round(rate * interval) / interval, rel=1e-6)


def test_a_backlog_draining_slower_than_offered_reads_as_its_capacity() -> None:
    # 300 tx/s offered for 3 s, the shard commits 200 a second (blocks of 40 every 0.2 s).
    times = [0.2 * k + 0.3 for k in range(1, 23) for _ in range(40)][:900]
    assert commit_rate(times) == pytest.approx(200.0, rel=0.02)
    assert commit_rate([]) is None and commit_rate([1.0, 1.0]) is None


def report(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "latency_ms": {"commit": {"p99": 700.0}}, "sent": 600, "offered": 600, "skipped": 0,
        "rejected_total": 0, "tps_offered": 200.0, "in_flight_at_end": 0,
        "tps_committed": 171.4,  # 600 over 3 s sending + 0.5 s latency
        "tps_commit_rate": 200.0}
    base.update(fields)
    return base


def test_keep_up_is_judged_by_the_commit_rate_not_the_latency_diluted_tps() -> None:
    assert judge(report(), Limits()) == ""
    why = judge(report(tps_commit_rate=150.0), Limits())
    assert why.startswith("committed at 150.0 tx/s < 90% of 200.0")
    # A report without the rate (one block) falls back to the committed TPS.
    assert judge(report(tps_commit_rate=None, tps_committed=190.0), Limits()) == ""
    assert judge(report(tps_commit_rate=None), Limits()).startswith("committed at 171.4")


@given(st.floats(1, 5_000), st.floats(1, 10))
def test_every_step_sends_enough_for_a_p99(rate: float, step_s: float) -> None:
    seconds = step_seconds(rate, step_s)
    assert seconds >= step_s
    assert rate * seconds >= STEP_SAMPLES_MIN - 1e-6
    if rate * step_s >= STEP_SAMPLES_MIN:
        assert seconds == step_s  # fast steps keep their length
