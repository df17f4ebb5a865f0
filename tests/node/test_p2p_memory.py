"""The in-memory twin of the p2p layer behaves like the libp2p host where node tests
rely on it: ordered delivery, request/response failures with reasons, gossip with
validators, counted drops; both implement ``P2PAPI``."""

from __future__ import annotations

import asyncio
import random

import pytest

from node.p2p.api import P2PAPI
from node.p2p.config import RequestFailed
from node.p2p.host import P2PHost
from node.p2p.memory import MemoryNetwork, RandomLinks
from node.sim.loop import run_virtual
from tests.support.p2p import make_configs, wait_for


def test_both_implementations_provide_the_interface() -> None:
    network = MemoryNetwork()
    assert isinstance(network.join("a", ["b"]), P2PAPI)
    assert isinstance(P2PHost(make_configs(1)[0]), P2PAPI)


async def test_memory_network_delivers_in_order_and_counts_drops() -> None:
    network = MemoryNetwork()
    a, b = network.join("a", ["b"]), network.join("b", ["a"])
    got: list[tuple[str, int, bytes]] = []
    b.on_message(lambda peer, channel, data: got.append((peer, channel, data)))
    async with a, b:
        assert a.connected_peers() == {"b"}
        for i in range(100):
            assert a.send_nowait("b", i % 3, b"%d" % i)
        await wait_for(lambda: len(got) == 100, 5, "delivery")
        assert got == [("a", i % 3, b"%d" % i) for i in range(100)]
        network.cut("a", "b")
        assert a.connected_peers() == frozenset()
        assert not a.send_nowait("b", 0, b"lost")
        assert not a.send_nowait("c", 0, b"who")
        network.heal("a", "b")
        assert a.broadcast(["b"], 0, b"back") == 1
        assert a.stats_snapshot()["drops"] == {"disconnected": 1, "unknown_peer": 1}


async def test_memory_requests_fail_with_reasons() -> None:
    network = MemoryNetwork()
    a, b = network.join("a", ["b"]), network.join("b", ["a"])

    async def handler(peer: str, data: bytes) -> bytes:
        if data == b"fail":
            raise ValueError("no such block")
        if data == b"hang":
            await asyncio.Event().wait()
        return b"block:" + data

    b.set_request_handler(handler)
    async with a, b:
        assert await a.request("b", b"1") == b"block:1"
        for data, reason in ((b"fail", "remote_error"), (b"hang", "timeout")):
            with pytest.raises(RequestFailed) as failed:
                await a.request("b", data, timeout=0.05)
            assert failed.value.reason == reason
        await b.stop()
        with pytest.raises(RequestFailed) as down:
            await a.request("b", b"1")
        assert down.value.reason == "stream_error"


async def test_memory_gossip_reaches_subscribers_and_validators_filter() -> None:
    network = MemoryNetwork()
    names = ["a", "b", "c"]
    members = [network.join(n, names) for n in names]
    got: dict[str, list[bytes]] = {n: [] for n in names}
    for member in members:
        member.subscribe(
            "blocks",
            lambda origin, data, n=member.peer_id: got[n].append(data),
            validator=lambda origin, data: data != b"bad",
        )
        await member.start()
    members[0].publish("blocks", b"good")
    members[0].publish("blocks", b"bad")
    await wait_for(lambda: len(got["b"]) + len(got["c"]) == 2, 5, "gossip")
    assert got == {"a": [], "b": [b"good"], "c": [b"good"]}
    assert members[1].stats_snapshot()["drops"] == {"gossip_invalid": 1}


def test_a_link_model_delays_loses_and_duplicates_in_order_and_partitions_cut() -> None:
    """Seeded link faults on the loop's (here virtual) clock: per link the copies that
    arrive keep their send order; partitions and stopped members cut delivery."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        links = RandomLinks(random.Random(1), delay_ms=(1, 50), loss=0.2, duplicate=0.1)
        network = MemoryNetwork(links)
        a, b, c = (network.join(n, ["a", "b", "c"]) for n in "abc")
        got: list[int] = []
        b.on_message(lambda peer, channel, data: got.append(int(data)))

        async def echo(peer: str, data: bytes) -> bytes:
            return data

        b.set_request_handler(echo)
        async with a, b, c:
            for i in range(200):
                assert a.send_nowait("b", 1, b"%d" % i)
            await asyncio.sleep(1)
            assert got == sorted(got)  # in send order, a duplicate next to its original
            assert 100 < len(set(got)) < 200 and len(got) > len(set(got))
            started = loop.time()
            assert await a.request("b", b"ping", timeout=60) == b"ping"
            assert loop.time() > started  # the request and its answer travelled
            network.partition([["a"], ["b", "c"]])
            assert a.connected_peers() == frozenset() and c.connected_peers() == {"b"}
            assert not a.send_nowait("b", 1, b"cut")
            network.heal_all()
            assert a.connected_peers() == {"b", "c"}
            got.clear()
            for i in range(20):
                a.send_nowait("b", 1, b"%d" % i)
            await b.stop()  # a crash: what is on its way is lost
            await asyncio.sleep(1)
            assert got == [] and b.stats_snapshot()["drops"]["not_running"] > 0

    run_virtual(scenario())
