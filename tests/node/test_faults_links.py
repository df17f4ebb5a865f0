"""Link faults inside the p2p layer (node/p2p/linkfaults.py) driven by a node's fault
state (node/faults/state.py), on the in-memory network in virtual time: delay by
scheduling and in order, seeded loss, partition of messages, requests and gossip in
both directions, and nothing at all without a filter."""

from __future__ import annotations

import asyncio

import pytest

from node.faults.state import FaultError, FaultState, LinkRule
from node.p2p.config import RequestFailed
from node.p2p.host import P2PHost
from node.p2p.memory import MemoryNetwork, MemoryP2P
from node.sim.loop import run_virtual
from tests.support.p2p import make_configs, wait_for

NAMES = {"shard0-node1": "B", "shard0-node2": "C"}


def pair() -> tuple[MemoryP2P, MemoryP2P, MemoryP2P, list[tuple[float, str, bytes]]]:
    network = MemoryNetwork()
    a = network.join("A", ["B", "C"])
    b = network.join("B", ["A", "C"])
    c = network.join("C", ["A", "B"])
    got: list[tuple[float, str, bytes]] = []
    for member in (a, b, c):
        member.on_message(lambda peer, channel, data, m=member: got.append(
            (asyncio.get_running_loop().time(), f"{peer}>{m.peer_id}", data)))
    return a, b, c, got


def test_a_delayed_link_delivers_late_and_in_order_both_ways() -> None:
    async def scenario() -> list[tuple[float, str, bytes]]:
        a, b, _, got = pair()
        state = FaultState(NAMES)
        for member in (a, b):
            await member.start()
        a.set_link_filter(state)
        state.set_links(["shard0-node1"], LinkRule(delay_ms=50))
        t0 = asyncio.get_running_loop().time()
        for i in range(5):
            assert a.send_nowait("B", 1, b"%d" % i)
        b.send_nowait("A", 1, b"back")
        await asyncio.sleep(0.2)
        return [(round(t - t0, 3), who, data) for t, who, data in got]

    got = run_virtual(scenario())
    assert [data for _, who, data in got if who == "A>B"] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(t >= 0.05 for t, _, _ in got)  # both directions: sent and received late


def test_loss_is_seeded_and_counted() -> None:
    async def scenario(seed: int) -> tuple[list[bytes], int]:
        a, b, _, got = pair()
        state = FaultState(NAMES, seed=seed)
        for member in (a, b):
            await member.start()
        a.set_link_filter(state)
        state.set_links("*", LinkRule(loss=0.5))
        for i in range(40):
            a.send_nowait("B", 1, b"%d" % i)
        await asyncio.sleep(0.01)
        return [data for _, _, data in got], a.drops["fault_loss"]

    first, lost = run_virtual(scenario(7))
    assert 0 < lost < 40 and len(first) == 40 - lost
    assert run_virtual(scenario(7))[0] == first  # the same seed loses the same ones


def test_a_partition_cuts_messages_requests_and_gossip_both_ways_and_heals() -> None:
    async def scenario() -> None:
        a, b, c, got = pair()
        state = FaultState(NAMES)
        for member in (a, b, c):
            await member.start()

        async def answer(peer: str, data: bytes) -> bytes:
            return b"ok:" + data

        gossip: list[str] = []
        for member in (a, b, c):
            member.set_request_handler(answer)
        a.subscribe("t", lambda origin, data: gossip.append(origin))
        a.set_link_filter(state)
        state.set_links(["shard0-node1"], LinkRule(partition=True))
        a.send_nowait("B", 1, b"to b")
        b.send_nowait("A", 1, b"from b")
        c.send_nowait("A", 1, b"from c")  # other links untouched
        b.publish("t", b"g")
        c.publish("t", b"g")
        with pytest.raises(RequestFailed) as asked:
            await a.request("B", b"q", timeout=1)
        assert asked.value.reason == "partitioned"
        with pytest.raises(RequestFailed):  # and A will not serve B
            await b.request("A", b"q", timeout=1)
        assert await a.request("C", b"q", timeout=1) == b"ok:q"
        await asyncio.sleep(0.01)
        assert [(who, data) for _, who, data in got] == [("C>A", b"from c")]
        assert gossip == ["C"]
        assert a.drops["fault_partition"] >= 4
        state.heal()
        a.send_nowait("B", 1, b"healed")
        assert await b.request("A", b"q", timeout=1) == b"ok:q"
        await asyncio.sleep(0.01)
        assert got[-1][1:] == ("A>B", b"healed")

    run_virtual(scenario())


def test_without_a_filter_nothing_is_hooked() -> None:
    network = MemoryNetwork()
    member = network.join("A", ["B"])
    assert member.links is None
    state = FaultState(NAMES)
    member.set_link_filter(state)
    assert member.links is not None
    member.set_link_filter(None)
    assert member.links is None


def test_an_unknown_peer_or_bad_value_is_refused_with_a_reason() -> None:
    state = FaultState(NAMES)
    with pytest.raises(FaultError) as unknown:
        state.set_links(["shard7-node0"], LinkRule(partition=True))
    assert unknown.value.reason == "unknown_peer"
    with pytest.raises(FaultError) as bad:
        LinkRule(loss=1.5)
    assert bad.value.reason == "bad_loss"
    with pytest.raises(FaultError) as mode:
        state.set_byzantine("chaos")
    assert mode.value.reason == "unknown_mode"
    assert not state.active


@pytest.mark.timeout(60)
async def test_the_libp2p_host_honours_the_same_hook() -> None:
    """Partition both ways (messages and requests), then a delay that keeps order."""
    hosts = [P2PHost(config) for config in make_configs(2)]
    try:
        await asyncio.gather(*(host.start() for host in hosts))
        a, b = hosts
        await wait_for(lambda: a.connected_peers() == {b.peer_id}
                       and b.connected_peers() == {a.peer_id}, 20, "connected")
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        a.on_message(lambda peer, channel, data: got["a"].append(data))
        b.on_message(lambda peer, channel, data: got["b"].append(data))

        async def answer(peer: str, data: bytes) -> bytes:
            return b"ok"

        a.set_request_handler(answer)
        b.set_request_handler(answer)
        state = FaultState({"shard0-node1": b.peer_id})
        a.set_link_filter(state)
        state.set_links("*", LinkRule(partition=True))
        assert a.send_nowait(b.peer_id, 1, b"lost-out")
        assert b.send_nowait(a.peer_id, 1, b"lost-in")
        with pytest.raises(RequestFailed):
            await a.request(b.peer_id, b"q", timeout=5)
        with pytest.raises(RequestFailed):
            await b.request(a.peer_id, b"q", timeout=5)
        await wait_for(lambda: a.stats_snapshot()["drops"].get("fault_partition", 0) >= 4,
                       10, "partition drops")
        state.set_links("*", LinkRule(delay_ms=30))
        for i in range(20):
            a.send_nowait(b.peer_id, 1, b"%d" % i)
            b.send_nowait(a.peer_id, 1, b"%d" % i)
        assert await a.request(b.peer_id, b"q", timeout=5) == b"ok"
        await wait_for(lambda: len(got["a"]) == 20 and len(got["b"]) == 20, 20, "delayed")
        expected = [b"%d" % i for i in range(20)]
        assert got == {"a": expected, "b": expected}  # nothing of the partition, in order
    finally:
        await asyncio.gather(*(host.stop() for host in hosts))
