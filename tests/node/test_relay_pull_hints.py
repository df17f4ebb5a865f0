"""When the relay pulls (node/relay.py): receipts a source shard announced (its
announcements' ``out_seqs``) and still missing one poll later, a gap, or a quiet
period; not merely because the source's tip moved (that pulled twice a second per
node whatever the traffic, issue 16)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import structlog

from consensus.kernel.codec import encode
from node.drops import DropLog
from node.metrics import NodeMetrics
from node.relay import ReceiptRelay, RelaySettings
from node.wire import ReceiptsResponse


class Clock:
    def __init__(self) -> None:
        self.now = 10_000

    def wall_ms(self) -> int:
        return self.now

    def monotonic_ms(self) -> int:
        return self.now


class Pool:
    """The InboundPool calls the pull decision makes."""

    def __init__(self) -> None:
        self.known = 0
        self.gap: tuple[int, int] | None = None

    def get_gaps(self, cursor_of: Any) -> dict[int, tuple[int, int]]:
        return {} if self.gap is None else {1: self.gap}

    def known_seq(self, src: int) -> int:
        return self.known

    def get_run_end(self, src: int, cursor: int) -> int:
        return max(cursor, self.known)


def make_relay(clock: Clock, pool: Pool, cursor: list[int]) -> ReceiptRelay:
    ledger: Any = SimpleNamespace(shard=0, validators=SimpleNamespace(keys=[[b""] * 4] * 2),
                                  in_cursor=lambda src: cursor[0])
    metrics, log = NodeMetrics(), structlog.get_logger()
    settings = RelaySettings(poll_interval_ms=500, idle_poll_ms=3000, request_timeout_ms=3000,
                             bundle_receipts_max=2000, serve_receipts_max=2000,
                             frame_bytes_max=8 * 1024 * 1024)
    no: Any = None
    return ReceiptRelay(ledger=ledger, index=0, pool=pool, store=no,  # type: ignore[arg-type]
                        metrics=metrics, log=log, send=no, request=no, verify_pool=no,
                        settings=settings, shard_tips={1: 50}, on_pooled=lambda: None,
                        clock=clock, drop=DropLog(log, metrics, clock))  # type: ignore[arg-type]


def polled(relay: ReceiptRelay) -> None:
    """What ``_pull`` records of a pull, without the network."""
    relay._polled_ms[1] = relay.clock.wall_ms()


def test_a_moving_tip_without_receipts_for_us_is_not_pulled() -> None:
    clock, pool = Clock(), Pool()
    relay = make_relay(clock, pool, [0])
    polled(relay)
    for height in range(1, 6):  # five polls; the source's announced tip moves each time
        relay.shard_tips[1] = 50 + height
        relay.note_announced(1, 0)
        clock.now += 500
        assert relay._wanted(1) is None
    clock.now += 3000  # the quiet period still pulls
    assert relay._wanted(1) == (1, 2000, False)


def test_announced_receipts_a_push_delivered_are_not_pulled() -> None:
    clock, pool, cursor = Clock(), Pool(), [0]
    relay = make_relay(clock, pool, cursor)
    polled(relay)
    relay.note_announced(1, 4)
    clock.now += 500
    assert relay._wanted(1) is None  # the push may still be on its way
    pool.known = 4  # it arrived
    clock.now += 500
    assert relay._wanted(1) is None
    cursor[0] = 4  # and was applied: still nothing owed
    pool.known = 0
    clock.now += 500
    assert relay._wanted(1) is None


def test_announced_receipts_still_missing_one_poll_later_are_pulled() -> None:
    clock, pool = Clock(), Pool()
    relay = make_relay(clock, pool, [2])
    polled(relay)
    relay.note_announced(1, 6)
    clock.now += 500
    assert relay._wanted(1) is None
    clock.now += 500
    assert relay._wanted(1) == (3, 2002, False)  # after the cursor
    relay.note_announced(1, 5)  # a lower hint never lowers what is owed
    assert relay._announced[1] == 6


def test_a_gap_is_pulled_at_once() -> None:
    clock, pool = Clock(), Pool()
    relay = make_relay(clock, pool, [0])
    polled(relay)
    pool.gap = (1, 3)
    assert relay._wanted(1) == (1, 3, True)


def test_a_hint_the_sources_answer_does_not_back_stops_the_pulls() -> None:
    """A byzantine proposer's made-up ``out_seqs`` costs one pull, not one per poll for
    ever: the source's answer (``out_seq``) lowers the hint."""
    clock, pool = Clock(), Pool()
    pulls: list[bytes] = []

    async def answer(shard: int, index: int, data: bytes, timeout_s: float) -> bytes:
        pulls.append(data)
        return encode(ReceiptsResponse([], 3))

    relay = make_relay(clock, pool, [3])
    relay._request = answer
    polled(relay)
    relay.note_announced(1, 2**40)
    clock.now += 500
    assert relay._wanted(1) is None
    clock.now += 500
    wanted = relay._wanted(1)
    assert wanted is not None
    asyncio.run(relay._pull(1, *wanted))
    assert len(pulls) == 1 and relay._announced[1] == 3
    for _ in range(3):
        clock.now += 500
        assert relay._wanted(1) is None
