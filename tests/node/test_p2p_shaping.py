"""Userspace network emulation (node/p2p/shaping.py, docs/NODE.md "Network emulation"):
the delay model, the shaped send queue, and real hosts on 127.0.0.1 with a one-way
delay (messages, heartbeats, requests, gossip) and a rate cap."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from node.p2p.config import P2PConfig, PeerSpec, peer_id_from_seed
from node.p2p.host import P2PHost
from node.p2p.sessions import OutQueue, WriteBatch
from node.p2p.shaped_queue import ShapedOutQueue
from node.p2p.shaping import DelayLine, Due, LinkShaper, shaper_of
from scripts.cli.params import free_base_port
from tests.support.p2p import seed, wait_for

pytestmark = pytest.mark.timeout(90)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------- the model


def test_latency_alone_delays_every_message_by_exactly_the_latency() -> None:
    shaper = LinkShaper(0.05)
    assert [shaper.due(size, now) for size, now in ((10, 1.0), (10**6, 1.0), (1, 2.5))] == [
        pytest.approx(1.05), pytest.approx(1.05), pytest.approx(2.55)]


def test_the_rate_spaces_messages_by_their_size_after_the_burst() -> None:
    rate_bit, size, burst = 8_000_000, 10_000, 20_000  # 1 MB/s: 10 ms per message
    shaper = LinkShaper(0.02, rate_bit, burst_bytes=burst)
    dues = [shaper.due(size, 0.0) for _ in range(100)]
    # The first two fit the burst (they leave at once), then one every 10 ms.
    assert dues[0] == pytest.approx(0.01 + 0.02) and dues[1] == pytest.approx(0.01 + 0.02)
    gaps = [b - a for a, b in itertools.pairwise(dues[2:])]
    assert all(gap == pytest.approx(0.01) for gap in gaps)
    # 1 MB handed over at once arrives at the rate: (1 MB - burst) / 1 MB/s + latency.
    assert dues[-1] == pytest.approx((100 * size - burst) / 1e6 + 0.01 + 0.02, rel=0.01)
    # An idle link refills: a message much later leaves at once again.
    assert shaper.due(size, 10.0) == pytest.approx(10.0 + 0.01 + 0.02)


def test_off_builds_no_shaper() -> None:
    assert shaper_of(0.0, 0) is None
    assert shaper_of(0.001, 0) is not None and shaper_of(0.0, 8_000) is not None


# ---------------------------------------------------------------- the queue


def due_at(taken: object) -> float:
    assert isinstance(taken, Due), taken
    return taken.at


def test_the_shaped_queue_releases_frames_when_due_in_order() -> None:
    clock = Clock()
    queue = ShapedOutQueue(100, 10**6, shaper=LinkShaper(0.05, clock=clock))
    for i in range(3):
        assert queue.put(1, b"frame%d" % i)
        clock.now += 0.01
    queue.put_control(b"ping")  # at +0.03: due at +0.08
    start = 100.0
    assert due_at(queue.take(10**6)) == pytest.approx(start + 0.05)
    clock.now = start + 0.061  # the first two frames are due, the third and the PING not
    batch = queue.take(10**6)
    assert isinstance(batch, WriteBatch) and batch.frames == [b"frame0", b"frame1"]
    assert due_at(queue.take(10**6)) == pytest.approx(start + 0.07)
    clock.now = start + 0.2
    batch = queue.take(10**6)
    assert isinstance(batch, WriteBatch)
    assert batch.frames == [b"ping", b"frame2"] and batch.app_frames() == 1
    assert isinstance(queue.take(10**6), trio.Event)  # empty: wait for the next put
    assert len(queue) == 0 and queue.queued_bytes == 0 and not queue.dues


def test_the_shaped_queue_keeps_the_batch_bound_and_the_queue_bounds() -> None:
    clock = Clock()
    queue = ShapedOutQueue(3, 10**6, shaper=LinkShaper(0.01, clock=clock))
    assert all(queue.put(1, bytes(100)) for _ in range(3))
    assert not queue.put(1, bytes(100)) and queue.refused_by == "queue_full"
    assert len(queue.dues) == 3  # a refused frame is not stamped
    clock.now += 1
    first = queue.take(150)  # the batch bound: two frames reach 150 bytes
    assert isinstance(first, WriteBatch) and len(first.frames) == 2
    second = queue.take(150)
    assert isinstance(second, WriteBatch) and len(second.frames) == 1 and not queue.dues


def test_the_pong_delay_line_is_bounded_against_a_ping_flood() -> None:
    line = DelayLine(LinkShaper(0.05), items_max=4)
    assert [line.put(b"pong") for _ in range(6)] == [True] * 4 + [False] * 2
    assert len(line.items) == 4


# ------------------------------------------------------------ real hosts


def shaped_configs(n: int, **overrides: object) -> list[P2PConfig]:
    base_port = free_base_port(n)
    ids = [peer_id_from_seed(seed(i)) for i in range(n)]
    return [P2PConfig(
        private_key_seed=seed(i), listen_host="127.0.0.1", listen_port=base_port + i,
        peers=tuple(PeerSpec(address=f"127.0.0.1:{base_port + j}", peer_id=ids[j])
                    for j in range(n) if j != i),
        **overrides)  # type: ignore[arg-type]
        for i in range(n)]


@contextlib.asynccontextmanager
async def running(configs: list[P2PConfig]) -> AsyncIterator[list[P2PHost]]:
    hosts = [P2PHost(config) for config in configs]
    try:
        await asyncio.gather(*(host.start() for host in hosts))
        ids = frozenset(host.peer_id for host in hosts)
        await wait_for(lambda: all(h.connected_peers() == ids - {h.peer_id} for h in hosts),
                       30, "full mesh")
        yield hosts
    finally:
        await asyncio.gather(*(host.stop() for host in hosts))


async def test_off_the_hosts_use_the_plain_queue() -> None:
    (config,) = shaped_configs(1)
    host = P2PHost(config)
    assert host.shaper is None
    assert all(type(q) is OutQueue for q in host._sessions._queues.values())


async def test_every_message_arrives_no_earlier_than_the_latency_in_order() -> None:
    latency = 0.05
    async with running(shaped_configs(3, emulated_latency_s=latency)) as hosts:
        a, b, c = hosts
        arrived: dict[str, list[tuple[float, int]]] = {b.peer_id: [], c.peer_id: []}
        def recorder(into: list[tuple[float, int]]) -> Callable[[str, int, bytes], None]:
            return lambda peer, channel, data: into.append((time.monotonic(), int(data)))

        for host in (b, c):
            host.on_message(recorder(arrived[host.peer_id]))
        sent: list[float] = []
        for i in range(200):  # to both peers, interleaved
            sent.append(time.monotonic())
            assert a.send_nowait(b.peer_id, 1, b"%d" % i)
            assert a.send_nowait(c.peer_id, 1, b"%d" % i)
        await wait_for(lambda: all(len(got) == 200 for got in arrived.values()), 30,
                       "messages")
        for got in arrived.values():
            assert [seq for _, seq in got] == list(range(200))  # FIFO per peer
            assert min(at - sent[seq] for at, seq in got) >= latency
        # Heartbeats: the PING and the PONG are each delayed (about 2 x latency).
        await wait_for(lambda: b.peer_id in a.stats_snapshot()["heartbeat_rtt_ms"], 10, "rtt")
        assert a.stats_snapshot()["heartbeat_rtt_ms"][b.peer_id] >= 2 * latency * 1000


async def test_requests_and_gossip_are_delayed_too() -> None:
    latency = 0.2  # above what gossip takes undelayed on a loaded machine (50-80 ms seen)
    configs = shaped_configs(3, emulated_latency_s=latency,
                             gossip_topics=("blocks",))
    async with running(configs) as (a, b, c):
        async def echo(peer: str, data: bytes) -> bytes:
            return data

        b.set_request_handler(echo)
        started = time.monotonic()
        assert await a.request(b.peer_id, b"hello", timeout=10) == b"hello"
        assert time.monotonic() - started >= 2 * latency  # the request, then the answer
        got: dict[str, float] = {}
        def first_arrival(name: str) -> Callable[[str, bytes], None]:
            def record(origin: str, data: bytes) -> None:
                got.setdefault(name, time.monotonic())
            return record

        for host in (b, c):
            host.subscribe("blocks", first_arrival(host.peer_id))
        await wait_for(lambda: all(
            len(h._gossip.pubsub.peer_topics.get("blocks", ())) == 2  # type: ignore[union-attr]
            for h in (a, b, c)), 30, "subscriptions")
        published = time.monotonic()
        a.publish("blocks", b"block")
        await wait_for(lambda: len(got) == 2, 30, "gossip")
        assert min(got.values()) - published >= latency


async def test_the_rate_cap_paces_a_bulk_transfer() -> None:
    rate_bit = 8_000_000  # 1 MB/s
    total, size = 1_500_000, 50_000
    async with running(shaped_configs(2, emulated_rate_bit=rate_bit)) as (a, b):
        received: list[float] = []
        b.on_message(lambda peer, channel, data: received.append(time.monotonic()))
        started = time.monotonic()
        for _ in range(total // size):
            assert a.send_nowait(b.peer_id, 1, bytes(size))
        await wait_for(lambda: len(received) == total // size, 30, "bulk transfer")
        elapsed = received[-1] - started
    burst = LinkShaper(0, rate_bit).burst_s
    expected = 8 * total / rate_bit - burst  # 1.5 s less the bucket's 10 ms
    # Not faster than the rate; slower only by the machine's own cost (loaded: generous).
    assert expected * 0.95 <= elapsed <= expected * 3


# ------------------------------------------------------------------ the config

NODE = '[node]\nshard = 0\nindex = 0\n'


def test_net_emulation_config_reaches_the_p2p_layer_only_in_userspace_mode() -> None:
    from node.config import parse_config
    from node.main import emulated_network

    assert parse_config(NODE).net_emulation.mode == "off"
    assert emulated_network(parse_config(NODE)) == {}
    userspace = parse_config(NODE + '[net_emulation]\nmode = "userspace"\nlatency_ms = 20\n'
                             'bandwidth_bits_per_s = 1000000\n')
    assert emulated_network(userspace) == {"emulated_latency_s": 0.02,
                                           "emulated_rate_bit": 1_000_000}
    netem = parse_config(NODE + '[net_emulation]\nmode = "netem"\nlatency_ms = 20\n')
    assert emulated_network(netem) == {}  # the kernel delays: the node adds nothing


@pytest.mark.parametrize(("section", "error"), [
    ('mode = "tc"\n', "mode"),
    ("latency_ms = -1\n", "latency_ms"),
    ("latency_ms = 2500\n", "heartbeat timeout"),
    ("bandwidth_bits_per_s = 100\n", "below 8000"),
])
def test_bad_net_emulation_config_is_refused_naming_the_key(section: str, error: str) -> None:
    from node.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="net_emulation") as refused:
        parse_config(NODE + "[net_emulation]\n" + section)
    assert error in str(refused.value)
