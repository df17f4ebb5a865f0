"""Who the p2p layer serves and how much it holds (issue 14, findings 6 and 7): strangers
are refused on every stream, genesis validators of every shard are served, requests in
flight are bounded, and the inbox and send queues have byte budgets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import struct
import time
import types
from collections.abc import AsyncIterator

import pytest
import trio
from libp2p.peer.id import ID
from structlog.testing import capture_logs

from node.config import parse_config
from node.main import p2p_config
from node.p2p.bridge import InboundGossip, InboundMessage, Inbox, Shared, TrioThread
from node.p2p.config import P2PConfig, P2PStats, PeerSpec, RequestFailed, peer_id_from_seed
from node.p2p.drops import DropLog
from node.p2p.framing import encode_ping, encode_req
from node.p2p.gate import PeerGate
from node.p2p.gossip import BridgedPubsub
from node.p2p.host import MSG_PROTOCOL, REQ_PROTOCOL, P2PHost
from node.p2p.inbound import Inbound
from node.p2p.sessions import SEND_BUDGET_FULL, OutQueue, SendBudget
from node.wire import TOPIC_BLOCKS
from sharding.accounts import derive_account
from sharding.genesis import load_genesis, make_genesis_dict
from tests.support.p2p import free_port, make_configs, probe_protocols, seed, wait_for

pytestmark = pytest.mark.timeout(90)

TOPIC = "t"
# Every protocol a host serves, with bytes that make an admitted peer get an answer
# (a PING gets a PONG, a request an answer, a ping an echo, identify answers at once).
PROBES = {
    MSG_PROTOCOL: encode_ping(7),
    REQ_PROTOCOL: encode_req(b"x"),
    "/meshsub/1.2.0": b"",
    "/meshsub/1.1.0": b"",
    "/meshsub/1.0.0": b"",
    "/ipfs/ping/1.0.0": os.urandom(32),
    "/ipfs/id/1.0.0": b"",
}


@contextlib.asynccontextmanager
async def started(hosts: list[P2PHost]) -> AsyncIterator[list[P2PHost]]:
    try:
        await asyncio.gather(*(host.start() for host in hosts))
        yield hosts
    finally:
        await asyncio.gather(*(host.stop() for host in hosts))


def unknown_peer_logs(logs: list[dict[str, object]]) -> set[object]:
    return {
        e["detail"] for e in logs if e["event"] == "p2p.dropped" and e["reason"] == "unknown_peer"
    }


async def test_stranger_is_refused_on_every_stream() -> None:
    """A key outside genesis (here: not a configured peer) gets nothing: no message,
    request, gossip or libp2p service (identify, ping) is served to it or taken from it."""
    config_a, config_b = make_configs(2, gossip_topics=(TOPIC,))
    assert config_a.accept_unknown_peers is False  # the default
    a, b = P2PHost(config_a), P2PHost(config_b)
    # The stranger knows a and would serve anyone, but a does not know it.
    stranger = P2PHost(P2PConfig(
        private_key_seed=seed(9), listen_host="127.0.0.1", listen_port=free_port(),
        peers=(PeerSpec(address=f"127.0.0.1:{config_a.listen_port}", peer_id=a.peer_id),),
        gossip_topics=(TOPIC,), accept_unknown_peers=True, dial_backoff_max_s=0.5,
    ))
    got_a: list[bytes] = []
    served: list[bytes] = []

    async def serve(peer: str, data: bytes) -> bytes:
        served.append(data)
        return b"block"

    a.on_message(lambda peer, channel, data: got_a.append(data))
    a.set_request_handler(serve)
    gossip: dict[str, list[bytes]] = {"a": [], "b": [], "stranger": []}
    a.subscribe(TOPIC, lambda origin, data: gossip["a"].append(data))
    b.subscribe(TOPIC, lambda origin, data: gossip["b"].append(data))
    stranger.subscribe(TOPIC, lambda origin, data: gossip["stranger"].append(data))

    with capture_logs() as logs:
        async with started([a, b, stranger]):
            await wait_for(lambda: b.peer_id in a.connected_peers(), 20, "a -> b")
            # The stranger dials a again and again (supervisor) and is refused each time.
            await wait_for(lambda: a.stats_snapshot()["drops"].get("unknown_peer", 0) >= 2,
                           20, "a refuses the stranger")
            assert stranger.send_nowait(a.peer_id, 1, b"from the stranger")  # queued only
            with pytest.raises(RequestFailed):
                await stranger.request(a.peer_id, b"blocks 1..100", timeout=3.0)

            # A raw libp2p client with a random key, on every protocol a serves.
            target = f"{a.listen_addrs[0]}/p2p/{a.peer_id}"
            outcomes = await asyncio.to_thread(probe_protocols, target, list(PROBES.items()))
            assert outcomes == ["refused"] * len(PROBES)
            # The same client with a configured peer's key is answered (the probe can
            # tell a refusal from an answer): b's key, as a second connection of b.
            known = await asyncio.to_thread(
                probe_protocols, target, [(MSG_PROTOCOL, encode_ping(1))], seed(1))
            assert known == ["answered"]

            # Gossip: a's publishes reach b but never the stranger, and a never takes
            # the stranger as a gossip peer.
            assert a.publish(TOPIC, b"announce 1")
            await wait_for(lambda: b"announce 1" in gossip["b"], 20, "gossip a -> b")
            if stranger.running:
                stranger.publish(TOPIC, b"stranger's announce")
            assert a.publish(TOPIC, b"announce 2")
            await wait_for(lambda: b"announce 2" in gossip["b"], 20, "gossip a -> b")
            pubsub = a._gossip.pubsub
            assert pubsub is not None
            assert stranger.peer_id not in {p.to_base58() for p in pubsub.peers}

    assert gossip["stranger"] == [] and gossip["a"] == []
    assert got_a == [] and served == []
    assert a.stats_snapshot()["requests_served"] == 0
    # Refusals are counted and logged with where they happened.
    assert "connection" in unknown_peer_logs(logs)
    assert a.stats_snapshot()["drops"]["unknown_peer"] >= 2


class FakeStream:
    """Just enough of an INetStream for the peer checks: who is at the other end."""

    def __init__(self, peer: str) -> None:
        self.muxed_conn = types.SimpleNamespace(peer_id=ID.from_base58(peer))
        self.was_reset = False
        self.reads = 0

    async def reset(self) -> None:
        self.was_reset = True

    async def read(self, n: int = -1) -> bytes:
        self.reads += 1
        raise AssertionError("a stranger's stream must not be read")


def test_every_protocol_handler_refuses_a_stranger_itself() -> None:
    """Each handler checks the peer on its own, whatever hook of py-libp2p let the stream
    or message through: the swarm's stream handler, our message and request handlers,
    the gossip stream handler, new gossip peers, and gossip forwarders and origins."""
    known, stranger = peer_id_from_seed(seed(1)), peer_id_from_seed(seed(9))
    config = P2PConfig(private_key_seed=seed(0))
    stats = P2PStats()
    log = types.SimpleNamespace(warning=lambda *a, **k: None, debug=lambda *a, **k: None)
    shared = Shared(config, stats, DropLog(stats, log), log, TrioThread(log))  # type: ignore[arg-type]
    gate = PeerGate(shared, frozenset({known}))
    inbound = Inbound(shared, Inbox(10, lambda batch: None), gate, lambda peer: None)
    passed: list[str] = []

    class FakeNetwork:
        def set_stream_handler(self, handler: object) -> None:
            self.handler = handler

    async def inner(stream: object) -> None:
        passed.append("swarm")

    pubsub = types.SimpleNamespace(_admit=gate.admit)

    async def main() -> list[FakeStream]:
        network = FakeNetwork()
        gate.guard_streams(network, inner)  # type: ignore[arg-type]
        streams = [FakeStream(stranger) for _ in range(3)]
        await network.handler(streams[0])  # type: ignore[operator]
        await inbound.handle_msg_stream(streams[1])  # type: ignore[arg-type]
        await inbound.handle_req_stream(streams[2])  # type: ignore[arg-type]
        gossip_stream = FakeStream(stranger)
        await BridgedPubsub.stream_handler(pubsub, gossip_stream)  # type: ignore[arg-type]
        streams.append(gossip_stream)
        # Past these checks the real pubsub would run: on this fake, that would raise.
        await BridgedPubsub._handle_new_peer(pubsub, ID.from_base58(stranger))  # type: ignore[arg-type]
        message = types.SimpleNamespace(from_id=ID.from_base58(stranger).to_bytes())
        await BridgedPubsub.push_msg(pubsub, ID.from_base58(known), message)  # type: ignore[arg-type]
        await BridgedPubsub.push_msg(  # type: ignore[arg-type]
            pubsub, ID.from_base58(stranger),
            types.SimpleNamespace(from_id=ID.from_base58(known).to_bytes()))
        # A known peer passes the swarm guard.
        await network.handler(FakeStream(known))  # type: ignore[operator]
        return streams

    streams = trio.run(main)
    assert all(s.was_reset and s.reads == 0 for s in streams)
    assert passed == ["swarm"]
    assert stats.drops["unknown_peer"] == 7  # one per check above
    assert inbound.slots.total == 0


async def test_genesis_validators_of_another_shard_are_accepted() -> None:
    """The node's peers are every other genesis validator of every shard: a validator of
    shard 1 pushes receipts (channel 3), pulls (requests) and gets gossip from shard 0."""
    genesis = load_genesis(make_genesis_dict(
        num_shards=3, validators_per_shard=1, seed="gate", accounts=4, balance=1, pool_reserve=1))
    keys = {(s, 0): derive_account(f"validator-{s}", 0) for s in range(3)}
    ports = {key.public_key: free_port() for key in keys.values()}

    def config_of(shard: int, index: int) -> P2PConfig:
        node_config = parse_config(f"[node]\nshard = {shard}\nindex = {index}\n")
        config = p2p_config(node_config, genesis, keys[shard, index])
        assert config.accept_unknown_peers is False
        assert {spec.public_key for spec in config.peers} == (
            set(ports) - {keys[shard, index].public_key})  # both shards
        peers = tuple(dataclasses.replace(spec, address=f"127.0.0.1:{ports[spec.public_key]}")
                      for spec in config.peers if spec.public_key is not None)
        own = ports[keys[shard, index].public_key]
        return dataclasses.replace(config, listen_port=own, announce_port=own, peers=peers)

    s0, s1 = P2PHost(config_of(0, 0)), P2PHost(config_of(1, 0))
    got: list[tuple[str, int, bytes]] = []
    s0.on_message(lambda peer, channel, data: got.append((peer, channel, data)))

    async def serve_receipts(peer: str, data: bytes) -> bytes:
        return b"receipts for " + data

    s0.set_request_handler(serve_receipts)
    announced: list[bytes] = []
    s1.subscribe(TOPIC_BLOCKS, lambda origin, data: announced.append(data))
    async with started([s0, s1]):
        await wait_for(lambda: s0.peer_id in s1.connected_peers()
                       and s1.peer_id in s0.connected_peers(), 20, "cross-shard connection")
        assert s1.send_nowait(s0.peer_id, 3, b"receipt bundle")
        await wait_for(lambda: (s1.peer_id, 3, b"receipt bundle") in got, 10, "push")
        assert await s1.request(s0.peer_id, b"shard 1") == b"receipts for shard 1"
        await wait_for(lambda: bool(s0._gossip.pubsub and s0._gossip.pubsub.peers), 20,
                       "gossip peers")
        await wait_for(lambda: (s0.publish(TOPIC_BLOCKS, b"block 7") and False)
                       or b"block 7" in announced, 20, "gossip to another shard")
        for host in (s0, s1):
            assert host.stats_snapshot()["drops"].get("unknown_peer", 0) == 0


async def test_request_in_flight_limit_is_enforced() -> None:
    """A peer serves at most requests_in_flight_per_peer_max requests of one peer and
    requests_in_flight_max in all at once; one more is answered ``busy`` at once (a
    typed RequestFailed), counted and logged; the slots come back when answered."""
    configs = make_configs(3, request_timeout_s=20.0)
    configs[1] = dataclasses.replace(
        configs[1], requests_in_flight_max=3, requests_in_flight_per_peer_max=2)
    a, server, c = (P2PHost(config) for config in configs)
    release = asyncio.Event()
    entered: list[str] = []

    async def slow(peer: str, data: bytes) -> bytes:
        entered.append(peer)
        await release.wait()
        return b"done:" + data

    server.set_request_handler(slow)
    with capture_logs() as logs:
        async with started([a, server, c]):
            await wait_for(lambda: server.peer_id in a.connected_peers()
                           and server.peer_id in c.connected_peers(), 20, "connections")
            from_a = [asyncio.ensure_future(a.request(server.peer_id, b"a%d" % i))
                      for i in range(2)]
            await wait_for(lambda: entered.count(a.peer_id) == 2, 10, "a's two requests")
            with pytest.raises(RequestFailed) as per_peer:
                await a.request(server.peer_id, b"a2")
            assert per_peer.value.reason == "busy"
            # Another peer still gets the last slot of the total ...
            from_c = asyncio.ensure_future(c.request(server.peer_id, b"c0"))
            await wait_for(lambda: c.peer_id in entered, 10, "c's request")
            assert server.stats_snapshot()["requests_in_flight"] == 3
            # ... and then nobody does.
            with pytest.raises(RequestFailed) as total:
                await c.request(server.peer_id, b"c1")
            assert total.value.reason == "busy"
            assert len(entered) == 3  # the refused ones never reached the handler

            release.set()
            assert await asyncio.gather(*from_a, from_c) == [b"done:a0", b"done:a1", b"done:c0"]
            await wait_for(lambda: server.stats_snapshot()["requests_in_flight"] == 0, 10,
                           "slots given back")
            assert await a.request(server.peer_id, b"a3") == b"done:a3"
    assert server.stats_snapshot()["drops"]["requests_in_flight_full"] == 2
    details = {e["detail"] for e in logs if e["event"] == "p2p.dropped"
               and e["reason"] == "requests_in_flight_full"}
    assert details == {"per_peer", "total"}


def test_inbox_counts_payload_bytes_and_refuses_beyond_its_budget() -> None:
    inbox = Inbox(4, lambda batch: None, bytes_max=1000)
    assert inbox.put_many([InboundMessage("p", 1, b"x" * 400)] * 3) == (1, "inbound_bytes_full")
    assert inbox.queued_bytes == 800
    inbox._drain()  # the node's loop took them
    assert inbox.queued_bytes == 0
    # An empty inbox takes one item of any size (a frame is never stuck forever) ...
    assert inbox.put_many([InboundGossip("t", "p", b"y" * 5000)]) == (0, "")
    assert inbox.put_many([InboundGossip("t", "p", b"z")]) == (1, "inbound_bytes_full")
    inbox._drain()
    # ... and the item count still holds.
    assert inbox.put_many([InboundMessage("p", 1, b"")] * 5) == (1, "inbound_full")
    assert inbox.queued_bytes_peak == 5000


async def test_inbox_byte_budget_drops_over_budget_frames() -> None:
    """A peer floods a node whose loop is busy: the inbox holds at most its byte budget;
    after the back-pressure pause what does not fit is dropped, counted and logged."""
    budget, size, n = 256 * 1024, 64 * 1024, 40
    sender_config, receiver_config = make_configs(2)
    receiver_config = dataclasses.replace(receiver_config, inbound_queue_bytes_max=budget)
    a, b = P2PHost(sender_config), P2PHost(receiver_config)
    got: list[bytes] = []

    def busy_node(peer: str, channel: int, data: bytes) -> None:
        if not got:  # the node's loop is stuck until the p2p layer drops something
            deadline = time.monotonic() + 30
            while not b.stats.drops["inbound_bytes_full"] and time.monotonic() < deadline:
                time.sleep(0.01)
        got.append(data)

    b.on_message(busy_node)
    with capture_logs() as logs:
        async with started([a, b]):
            await wait_for(lambda: b.peer_id in a.connected_peers(), 20, "connection")
            for i in range(n):
                assert a.send_nowait(b.peer_id, 1, bytes([i]) * size)
            await wait_for(lambda: b.stats.drops["inbound_bytes_full"] > 0, 30, "a drop")
            await wait_for(lambda: b.stats_snapshot()["inbound_queue_bytes"] == 0, 30,
                           "inbox drained")
            stats = b.stats_snapshot()
    assert stats["inbound_queue_bytes_peak"] <= budget
    assert stats["drops"].get("inbound_full", 0) == 0  # the bytes bound, not the count
    assert 0 < len(got) < n
    assert any(e["event"] == "p2p.dropped" and e["reason"] == "inbound_bytes_full"
               for e in logs)


def test_send_queues_share_a_byte_budget() -> None:
    budget = SendBudget(1000)
    first, second = OutQueue(100, 800, budget), OutQueue(100, 800, budget)
    assert first.put(1, b"x" * 600)
    assert not second.put(1, b"y" * 600)
    assert second.refused_by == SEND_BUDGET_FULL
    batch = first.take(1 << 20)
    assert not isinstance(batch, trio.Event) and budget.used == 0
    assert second.put(1, b"y" * 600)


async def test_sends_over_the_total_budget_are_dropped_with_a_reason() -> None:
    config = make_configs(3, send_queues_bytes_max=1000)[0]
    host = P2PHost(config)  # not started: messages wait in the queues
    first, second = (spec.id for spec in config.peers)
    with capture_logs() as logs:
        assert host.send_nowait(first, 1, b"x" * 600)
        assert not host.send_nowait(second, 1, b"y" * 600)
        assert host.broadcast([first, second], 1, b"z" * 600) == 0
    assert host.stats.drops == {SEND_BUDGET_FULL: 3}
    assert host.stats_snapshot()["send_queue_bytes"] == 600 + 7  # one frame, header
    assert any(e["event"] == "p2p.dropped" and e["reason"] == SEND_BUDGET_FULL for e in logs)


async def test_a_peer_can_make_us_buffer_only_bounded_streams() -> None:
    """Per peer at most msg_streams_per_peer_max message streams (each buffers at most
    one frame); a request frame is bounded by request_bytes_max, not frame_bytes_max."""
    config, other = make_configs(2, msg_streams_per_peer_max=2, request_bytes_max=4096)
    host = P2PHost(config)  # ``other`` is not running: the probe uses its key
    async with started([host]):
        target = f"{host.listen_addrs[0]}/p2p/{host.peer_id}"
        too_big = struct.pack(">IB", 4096 + 1, 4)  # a REQ header past request_bytes_max
        outcomes = await asyncio.to_thread(probe_protocols, target, [
            (MSG_PROTOCOL, encode_ping(1)), (MSG_PROTOCOL, encode_ping(2)),
            (MSG_PROTOCOL, encode_ping(3)),
            (REQ_PROTOCOL, encode_req(b"r" * 100)), (REQ_PROTOCOL, too_big),
        ], other.private_key_seed)
        with pytest.raises(ValueError, match="request_bytes_max"):
            await host.request(other.peer_id, b"r" * 4096)
    # Two streams answered PINGs, the third was reset; the small request got an answer
    # (no handler here: an error answer), the oversized one a reset.
    assert outcomes == ["answered", "answered", "refused", "answered", "refused"]
    drops = host.stats.drops
    assert drops["too_many_streams"] == 1 and drops["frame_oversized"] == 1
