"""The p2p facade with real hosts on 127.0.0.1 sockets (each host in its own trio
thread, all in this process): ordered stream delivery, request/response, gossip,
bounded queues, config errors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from consensus.kernel.errors import DecodeError, InvariantViolation
from node.p2p.bridge import Shared, TrioThread
from node.p2p.config import (
    P2PConfig,
    P2PConfigError,
    P2PError,
    P2PStats,
    PeerSpec,
    RequestFailed,
)
from node.p2p.drops import DropLog
from node.p2p.host import P2PHost
from node.p2p.sessions import WRITE_PIECE_BYTES, OutQueue, Sessions, _Session
from tests.support.p2p import make_configs, seed, wait_for

pytestmark = pytest.mark.timeout(60)
SEQ = struct.Struct(">Q")


@contextlib.asynccontextmanager
async def running(configs: list[P2PConfig]) -> AsyncIterator[list[P2PHost]]:
    hosts = [P2PHost(config) for config in configs]
    try:
        await asyncio.gather(*(host.start() for host in hosts))
        ids = [host.peer_id for host in hosts]
        await wait_for(
            lambda: all(
                host.connected_peers() == frozenset(ids) - {host.peer_id} for host in hosts
            ),
            20,
            "full mesh",
        )
        yield hosts
    finally:
        await asyncio.gather(*(host.stop() for host in hosts))


class Recorder:
    """Collects stream messages; checks per-sender order of sequence numbers."""

    def __init__(self, expected: int) -> None:
        self.next: dict[str, int] = defaultdict(int)
        self.out_of_order = 0
        self.count = 0
        self.expected = expected
        self.done = asyncio.Event()

    def __call__(self, peer: str, channel: int, data: bytes) -> None:
        (seq,) = SEQ.unpack_from(data)
        if seq != self.next[peer] or channel != 3:
            self.out_of_order += 1
        self.next[peer] = seq + 1
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def test_two_hosts_exchange_messages_in_order_without_loss() -> None:
    n = 20_000
    async with running(make_configs(2)) as (a, b):
        rec_a, rec_b = Recorder(n), Recorder(n)
        a.on_message(rec_a)
        b.on_message(rec_b)
        pad = b"p" * 192
        for seq in range(n):
            assert a.send_nowait(b.peer_id, 3, SEQ.pack(seq) + pad)
            assert b.send_nowait(a.peer_id, 3, SEQ.pack(seq) + pad)
        await asyncio.wait_for(asyncio.gather(rec_a.done.wait(), rec_b.done.wait()), 30)
        assert (rec_a.count, rec_a.out_of_order) == (n, 0)
        assert (rec_b.count, rec_b.out_of_order) == (n, 0)
        stats = a.stats_snapshot()
        assert stats["msgs_sent"] == {3: n} and stats["msgs_received"] == {3: n}
        assert stats["bytes_sent"] == {3: n * 200}
        assert stats["frames_per_write_avg"] > 10  # queued frames are joined into few writes
        assert stats["drops"].get("queue_full", 0) == 0
        # Heartbeats (every 1 s) measure the round trip to each peer.
        await wait_for(lambda: b.peer_id in a.stats_snapshot()["heartbeat_rtt_ms"], 5, "rtt")
        # Measured and positive; how long it is depends on the machine (a PING sent during
        # the bulk transfer waits behind it: 1-2.3 s seen at load average 10-20).
        assert a.stats_snapshot()["heartbeat_rtt_ms"][b.peer_id] > 0


async def test_large_messages_keep_their_place_in_the_stream() -> None:
    async with running(make_configs(2)) as (a, b):
        got: list[bytes] = []
        b.on_message(lambda peer, channel, data: got.append(data))
        sent = []
        for i in range(6):
            data = bytes([i]) * (3 * 1024 * 1024 if i % 2 else 100)
            sent.append(data)
            assert a.send_nowait(b.peer_id, 1, data)
        await wait_for(lambda: len(got) == len(sent), 20, "large messages")
        assert got == sent


async def test_a_stalled_receiver_gets_back_pressure_not_losses() -> None:
    n = 5_000
    sender_config, receiver_config = make_configs(2)
    receiver_config = dataclasses.replace(receiver_config, inbound_queue_max=100)
    async with running([sender_config, receiver_config]) as (a, b):
        rec = Recorder(n)

        def slow_start(peer: str, channel: int, data: bytes) -> None:
            if rec.count == 0:
                time.sleep(0.5)  # the node's loop is busy: the inbox fills up
            rec(peer, channel, data)

        b.on_message(slow_start)
        for seq in range(n):
            assert a.send_nowait(b.peer_id, 3, SEQ.pack(seq))
        await asyncio.wait_for(rec.done.wait(), 30)
        assert (rec.count, rec.out_of_order) == (n, 0)
        assert b.stats_snapshot()["drops"].get("inbound_full", 0) == 0


async def test_four_hosts_full_mesh_delivers_everything_in_order() -> None:
    n = 1_000
    async with running(make_configs(4)) as hosts:
        recorders = [Recorder(3 * n) for _ in hosts]
        for host, rec in zip(hosts, recorders, strict=True):
            host.on_message(rec)
        for seq in range(n):
            for host in hosts:
                peers = [h.peer_id for h in hosts if h is not host]
                assert host.broadcast(peers, 3, SEQ.pack(seq) + b"x" * 100) == 3
        await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in recorders)), 30)
        for rec in recorders:
            assert rec.count == 3 * n and rec.out_of_order == 0
            assert sorted(rec.next.values()) == [n, n, n]


async def test_request_response_and_its_failures() -> None:
    configs = make_configs(2, request_timeout_s=2.0)
    async with running(configs) as (a, b):
        release = asyncio.Event()

        async def handler(peer: str, data: bytes) -> bytes:
            assert peer == a.peer_id
            if data == b"fail":
                raise ValueError("no such block")
            if data == b"hang":
                await release.wait()
            return b"block:" + data

        b.set_request_handler(handler)
        # As many at once as b serves for one peer (requests_in_flight_per_peer_max).
        n = b.config.requests_in_flight_per_peer_max
        answers = await asyncio.gather(*(a.request(b.peer_id, b"%d" % i) for i in range(n)))
        assert answers == [b"block:%d" % i for i in range(n)]
        big = await a.request(b.peer_id, b"z" * 500_000)
        assert big == b"block:" + b"z" * 500_000

        with pytest.raises(RequestFailed) as failed:
            await a.request(b.peer_id, b"fail")
        assert failed.value.reason == "remote_error"

        with pytest.raises(RequestFailed) as timed_out:
            await a.request(b.peer_id, b"hang", timeout=0.5)
        assert timed_out.value.reason == "timeout"
        release.set()

        # b asks a, which has no handler: a clean remote error, not a hang.
        with pytest.raises(RequestFailed) as unhandled:
            await b.request(a.peer_id, b"x")
        assert unhandled.value.reason == "remote_error"
        assert a.stats_snapshot()["requests_failed"] == 2


async def test_a_failing_request_handler_answers_a_generic_error_and_counts_handler_error() -> None:
    """Our handler's bug is ours: the peer learns nothing of it, we log and count it.
    A ``ShardnetError`` rejects the request (the peer's fault): the peer gets its reason."""
    async with running(make_configs(2)) as (a, b):

        async def handler(peer: str, data: bytes) -> bytes:
            if data == b"bug":
                raise ValueError("secret internal state")
            if data == b"broken":
                raise InvariantViolation("our ledger is broken")
            raise DecodeError("bad request bytes")

        b.set_request_handler(handler)
        with capture_logs() as logs:
            details = []
            for data in (b"bug", b"broken", b"garbage"):
                with pytest.raises(RequestFailed) as failed:
                    await a.request(b.peer_id, data)
                assert failed.value.reason == "remote_error"
                details.append(failed.value.detail)
        assert details == ["request failed", "request failed", "malformed"]
        failures = [e for e in logs if e["event"] == "p2p.handler_failed"]
        assert [e["error"] for e in failures] == [
            "ValueError('secret internal state')",
            "InvariantViolation('our ledger is broken')",
        ]
        assert all(e["peer"] == a.peer_id and e["log_level"] == "error" for e in failures)
        drops = b.stats_snapshot()["drops"]
        assert drops["handler_error"] == 2 and drops["request_rejected"] == 1
        assert a.stats_snapshot()["drops"].get("handler_error", 0) == 0


async def test_gossip_reaches_every_subscriber_and_validators_stop_bad_messages() -> None:
    n = 30
    configs = make_configs(4, gossip_topics=("blocks",))
    async with running(configs) as hosts:
        got: list[dict[str, list[bytes]]] = [defaultdict(list) for _ in hosts]
        for host, received in zip(hosts, got, strict=True):
            host.subscribe(
                "blocks",
                lambda origin, data, r=received: r[origin].append(data),
                validator=lambda origin, data: not data.startswith(b"bad"),
            )
        # Every node needs to see the others' subscriptions before publishing.
        await wait_for(
            lambda: all(
                len(h._gossip.pubsub.peer_topics.get("blocks", ())) == 3  # type: ignore[union-attr]
                for h in hosts
            ),
            20,
            "subscriptions",
        )
        source = hosts[0]
        with capture_logs() as logs:
            for i in range(n):
                source.publish("blocks", b"block %d" % i)
            source.publish("blocks", b"bad block")
            await wait_for(
                lambda: all(len(r[source.peer_id]) == n for r in got[1:]), 20, "gossip delivery"
            )
        for received in got[1:]:
            assert sorted(received[source.peer_id]) == sorted(b"block %d" % i for i in range(n))
        assert got[0] == {}  # our own publishes are not handed back
        assert source.stats_snapshot()["drops"].get("gossip_invalid") == 1
        assert any(e["event"] == "p2p.dropped" and e["reason"] == "gossip_invalid" for e in logs)


async def test_full_send_queue_refuses_counts_and_logs() -> None:
    # The peer does not exist (nothing listens there): the queue fills up and refuses.
    (config,) = make_configs(1)
    other = make_configs(2)[1]
    config = P2PConfig(
        private_key_seed=config.private_key_seed,
        listen_host="127.0.0.1",
        listen_port=config.listen_port,
        peers=(PeerSpec(address=f"127.0.0.1:{other.listen_port}", peer_id=other.peer_id),),
        send_queue_frames_max=10,
    )
    async with P2PHost(config) as host:
        with capture_logs() as logs:
            accepted = [host.send_nowait(other.peer_id, 1, b"m") for _ in range(15)]
            assert not host.send_nowait("12D3KooWNotAPeer", 1, b"m")
        assert accepted == [True] * 10 + [False] * 5
        assert host.queued(other.peer_id) == 10
        drops = host.stats_snapshot()["drops"]
        assert drops["queue_full"] == 5 and drops["unknown_peer"] == 1
        dropped = [e for e in logs if e["event"] == "p2p.dropped"]
        assert {e["reason"] for e in dropped} == {"queue_full", "unknown_peer"}
        assert dropped[0]["peer"] == other.peer_id
        with pytest.raises(ValueError):
            host.send_nowait(other.peer_id, 1, b"x" * config.frame_bytes_max)


def test_config_errors_name_the_offending_key() -> None:
    own_id = P2PConfig(private_key_seed=seed(0)).peer_id
    cases: dict[str, Callable[[], object]] = {
        "private_key_seed": lambda: P2PConfig(private_key_seed=b"short"),
        "listen_host": lambda: P2PConfig(private_key_seed=seed(0), listen_host="localhost"),
        "heartbeat_timeout_s": lambda: P2PConfig(
            private_key_seed=seed(0), heartbeat_timeout_s=0.5
        ),
        "gossip_message_bytes_max": lambda: P2PConfig(
            private_key_seed=seed(0), gossip_message_bytes_max=2 * 1024 * 1024
        ),
        "peers.address": lambda: PeerSpec(address="nohost", peer_id=own_id),
        "peers.peer_id": lambda: PeerSpec(address="h:1", peer_id="not-a-peer-id"),
        "peers": lambda: P2PConfig(
            private_key_seed=seed(0), peers=(PeerSpec(address="h:1", peer_id=own_id),)
        ),
    }
    for key, make in cases.items():
        with pytest.raises(P2PConfigError) as failed:
            make()
        assert failed.value.reason == key


async def test_peers_given_by_dns_name_are_resolved_and_dialled() -> None:
    configs = [
        P2PConfig(
            private_key_seed=config.private_key_seed,
            listen_host="127.0.0.1",
            listen_port=config.listen_port,
            peers=tuple(
                PeerSpec(address=spec.address.replace("127.0.0.1", "localhost"), peer_id=spec.id)
                for spec in config.peers
            ),
        )
        for config in make_configs(2)
    ]
    async with running(configs) as (a, b):
        assert a.connected_peers() == {b.peer_id}


async def test_pending_request_fails_at_once_when_our_host_stops() -> None:
    async with running(make_configs(2)) as (a, b):
        called, release = asyncio.Event(), asyncio.Event()

        async def hang(peer: str, data: bytes) -> bytes:
            called.set()
            await release.wait()
            return b""

        b.set_request_handler(hang)
        pending = asyncio.create_task(a.request(b.peer_id, b"block 7", timeout=30))
        await asyncio.wait_for(called.wait(), 10)
        await a.stop()
        with pytest.raises(RequestFailed) as failed:
            await asyncio.wait_for(pending, 5)
        assert failed.value.reason == "not_running"
        release.set()


async def test_start_fails_with_a_reason_when_the_port_is_taken() -> None:
    (config,) = make_configs(1)
    async with P2PHost(config):
        with pytest.raises(P2PError) as failed:
            async with P2PHost(config):
                pass
    assert failed.value.reason == "start_failed"


def heartbeat_outcome(peer_sends_every_s: float | None, run_for_s: float) -> str | None:
    """Run one session's heartbeat on a virtual clock while the peer's PONGs never come
    back (queued behind bulk data) and the peer sends on its own stream every
    ``peer_sends_every_s`` (None: it sends nothing). The heartbeat's verdict, or None if
    it still trusts the peer after ``run_for_s``."""
    config = make_configs(2)[0]
    peer = config.peers[0].id
    log = structlog.get_logger()
    stats = P2PStats()
    sessions = Sessions(Shared(config, stats, DropLog(stats, log), log, TrioThread(log)))
    queue = OutQueue(config.send_queue_frames_max, config.send_queue_bytes_max)
    outcome: list[str | None] = [None]

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def peer_sends(every_s: float) -> None:
                while True:
                    await trio.sleep(every_s)
                    sessions.heard(peer)

            if peer_sends_every_s is not None:
                nursery.start_soon(peer_sends, peer_sends_every_s)
            with trio.move_on_after(run_for_s):
                outcome[0] = await sessions._heartbeat(peer, queue, _Session())
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return outcome[0]


def test_a_peer_busy_sending_to_us_is_not_taken_for_frozen() -> None:
    # Under CPU starvation a PING waits behind up to a megabyte of queued frames and the
    # PONG behind the peer's: with both sides sending bulk data the PONG took > 5 s and
    # the heartbeat closed a healthy connection, losing the batch in flight (the 30 s
    # timeout of the 20,000-message test on a loaded machine). Bytes on the peer's own
    # stream prove it alive.
    assert heartbeat_outcome(peer_sends_every_s=0.5, run_for_s=60) is None
    # A peer that sends nothing at all is still found frozen after the timeout.
    assert heartbeat_outcome(peer_sends_every_s=None, run_for_s=60) == "heartbeat_timeout"


class SlowStream:
    """A stream whose writes take ``s_per_piece`` per WRITE_PIECE_BYTES (a slow, loaded
    peer), or never finish (``s_per_piece`` None: a frozen one)."""

    def __init__(self, s_per_piece: float | None) -> None:
        self.s_per_piece = s_per_piece
        self.written = 0

    async def write(self, data: bytes) -> None:
        if self.s_per_piece is None:
            await trio.sleep_forever()
        await trio.sleep(self.s_per_piece * len(data) / WRITE_PIECE_BYTES)
        self.written += len(data)


def write_stalls(stream: SlowStream, size: int) -> bool:
    config = make_configs(2)[0]  # write_timeout_s 5
    log = structlog.get_logger()
    stats = P2PStats()
    sessions = Sessions(Shared(config, stats, DropLog(stats, log), log, TrioThread(log)))
    outcome: list[bool] = []

    async def main() -> None:
        outcome.append(await sessions._write_pieces(stream, b"x" * size))  # type: ignore[arg-type]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return outcome[0]


def test_a_batch_write_times_out_on_no_progress_not_on_its_total_time() -> None:
    # A 1 MiB batch at 2 s per 256 KiB takes 8 s in all, over the 5 s write timeout: the
    # peer is slow, not stalled, and the batch must not be dropped.
    slow = SlowStream(s_per_piece=2.0)
    assert not write_stalls(slow, 4 * WRITE_PIECE_BYTES)
    assert slow.written == 4 * WRITE_PIECE_BYTES
    # A peer that takes no bytes at all still times the write out.
    assert write_stalls(SlowStream(s_per_piece=None), 4 * WRITE_PIECE_BYTES)
