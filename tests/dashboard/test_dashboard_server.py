"""The dashboard's server against fake nodes (``tests/dashboard/fakes.py``): what the
page reads, a node that does not answer, the transaction search, the guards."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from scripts.cli.load.targets import NodeTarget
from scripts.dashboard.aggregator import ANSWER_BYTES_MAX, Aggregator
from scripts.dashboard.page import PAGE_HTML, PAGE_JS
from scripts.dashboard.server import DashboardServer
from tests.dashboard.fakes import FakeNode, network_of

DOWN = NodeTarget("shard1-node3", 1, 3, "http://127.0.0.1:9")  # the discard port: refused


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


class Dashboard:
    def __init__(self, nodes: list[FakeNode], aggregator: Aggregator, server: DashboardServer,
                 client: TestClient[aiohttp.web.Request, aiohttp.web.Application]) -> None:
        self.nodes, self.aggregator, self.server, self.client = nodes, aggregator, server, client

    def node(self, shard: int, index: int) -> FakeNode:
        return next(n for n in self.nodes if (n.shard, n.index) == (shard, index))


@pytest.fixture
async def dash() -> AsyncIterator[Dashboard]:
    nodes = [FakeNode(shard, index) for shard in (0, 1) for index in (0, 1)]
    for node in nodes:
        await node.start()
    aggregator = Aggregator(network_of([n.target() for n in nodes] + [DOWN]),
                            interval_s=0.1, window_s=5.0)
    server = DashboardServer(aggregator, stream_subscribers_max=2)
    client = TestClient(TestServer(server.app(), host="127.0.0.1"))
    await client.start_server()
    await aggregator.start()
    try:
        yield Dashboard(nodes, aggregator, server, client)
    finally:
        await aggregator.stop()
        await client.close()
        for node in nodes:
            await node.close()


async def test_the_snapshot_shows_both_shards_and_the_node_that_does_not_answer(
        dash: Dashboard) -> None:
    await until(lambda: dash.aggregator.snapshot()["nodes_up"] == 4, "4 nodes up")
    dash.node(0, 0).height = dash.node(0, 1).height = 7
    await until(lambda: dash.aggregator.snapshot()["shards"][0]["height"] == 7, "height 7")
    answer = await dash.client.get("/api/snapshot")
    assert answer.status == 200
    snapshot = await answer.json()
    assert [s["shard"] for s in snapshot["shards"]] == [0, 1]
    assert snapshot["shards"][0]["height"] == 7 and snapshot["shards"][1]["height"] == 1
    assert snapshot["shards"][1]["nodes_up"] == 2 and snapshot["shards"][1]["nodes"] == 3
    down = next(n for n in snapshot["nodes"] if n["name"] == "shard1-node3")
    assert down["up"] is False and "cannot connect" in down["error"]
    assert snapshot["nodes_up"] == 4 and snapshot["nodes_total"] == 5


async def test_blocks_from_the_event_streams_are_shown_once(dash: Dashboard) -> None:
    await until(lambda: all(n.queues for n in dash.nodes), "every node's stream followed")
    for node in dash.nodes:  # every node of each shard commits the same block
        node.commit()
    await until(lambda: len(dash.aggregator.snapshot()["blocks"]) == 2, "two blocks")
    blocks = dash.aggregator.snapshot()["blocks"]
    assert sorted((b["shard"], b["height"]) for b in blocks) == [(0, 2), (1, 2)]
    live = [n["events"] for n in dash.aggregator.snapshot()["nodes"]]
    assert live.count("live") == 4


async def test_the_stream_sends_a_new_snapshot_every_interval(dash: Dashboard) -> None:
    ticks = []
    async with dash.client.get("/api/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            if line.startswith(b"data: "):
                ticks.append(json.loads(line[6:])["tick"])
                if len(ticks) == 3:
                    break
    assert ticks == sorted(ticks) and len(set(ticks)) == 3


async def test_a_page_beyond_the_stream_cap_is_told_to_retry(dash: Dashboard) -> None:
    first = await dash.client.get("/api/stream")
    second = await dash.client.get("/api/stream")
    try:
        await until(lambda: len(dash.server.streams) == 2, "two streams open")
        third = await dash.client.get("/api/stream")
        assert third.status == 503 and third.headers["Retry-After"] == "5"
        assert (await third.json())["error"] == "too_many_subscribers"
    finally:
        first.close()
        second.close()
    await until(lambda: not dash.server.streams, "the streams' slots freed")


async def test_the_charts_are_svg_one_per_measure(dash: Dashboard) -> None:
    await until(lambda: dash.aggregator.tick >= 3, "three samples")
    answer = await dash.client.get("/api/charts")
    body = await answer.text()
    assert answer.status == 200 and body.count("<svg") == 6
    for title in ("height", "committed tx/s", "commit latency", "view changes", "mempool",
                  "peers"):
        assert title in body
    assert "<script" not in body and "shard 0" in body and "shard 1" in body


async def test_the_search_finds_the_transaction_on_its_shard_and_reads_each_hop(
        dash: Dashboard) -> None:
    digest = "ab" * 32
    dash.node(1, 0).txs[digest] = dash.node(1, 1).txs[digest] = {
        "hash": digest, "status": "finalized", "shard": 1, "height": 4,
        "outcome": {"ok": True, "error": None, "receipts": 1},
        "hops": [{"shard": 1, "height": 4, "time_ms": 1000},
                 {"shard": 0, "height": 6, "time_ms": 1250, "src_shard": 1, "seq": 3}]}
    await until(lambda: dash.aggregator.snapshot()["nodes_up"] == 4, "4 nodes up")
    answer = await dash.client.get(f"/api/tx/0x{digest.upper()}")
    assert answer.status == 200
    tx = await answer.json()
    assert tx["status"] == "finalized" and tx["shard"] == 1
    assert [(h["shard"], h["height"], h["after_ms"]) for h in tx["hops"]] == [
        (1, 4, 0), (0, 6, 250)]
    assert tx["hops"][1]["block"]["hash"] == f"{6:064x}"  # read from shard 0
    assert tx["unreachable_shards"] == {}


async def test_the_search_of_an_unknown_transaction_is_a_404(dash: Dashboard) -> None:
    answer = await dash.client.get(f"/api/tx/{'cd' * 32}")
    assert answer.status == 404
    assert (await answer.json())["error"] == "not_found"


@pytest.mark.parametrize("text", ["xyz", "ab" * 31, "ab" * 33, "g" * 64, "%00", "ab" * 32 + " 1"])
async def test_the_search_refuses_what_is_not_a_hash_without_asking_a_node(
        dash: Dashboard, text: str) -> None:
    answer = await dash.client.get(f"/api/tx/{text}")
    assert answer.status == 400
    assert (await answer.json())["error"] == "malformed"
    assert not any(n.asked for n in dash.nodes)


async def test_a_request_naming_another_host_is_refused(dash: Dashboard) -> None:
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    for path in ("/", "/api/snapshot", f"/api/tx/{'ab' * 32}"):
        answer = await dash.client.get(path, headers={"Host": "evil.example:8900"})
        assert answer.status == 403
        assert (await answer.json())["error"] == "forbidden_host"
    assert not any(n.asked for n in dash.nodes)
    ok = await dash.client.get("/", headers={"Host": "localhost:8900"})
    assert ok.status == 200


async def test_unknown_routes_and_bad_queries_are_json_errors(dash: Dashboard) -> None:
    missing = await dash.client.get("/nope")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    wrong = await dash.client.post("/api/snapshot")
    assert wrong.status == 405
    for limit in ("1", "x", "-5", "10000000", "²"):
        bad = await dash.client.get("/api/series", params={"limit": limit})
        assert bad.status == 400 and (await bad.json())["error"] == "malformed"
    good = await dash.client.get("/api/series", params={"limit": "2"})
    assert good.status == 200
    assert all(len(points) <= 2 for points in (await good.json())["shards"].values())


async def test_the_page_loads_nothing_from_elsewhere(dash: Dashboard) -> None:
    answer = await dash.client.get("/")
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "http" not in csp
    for text in (PAGE_HTML, PAGE_JS):
        assert not re.search(r"(https?:)?//[a-z0-9]", text, re.IGNORECASE)
    assert 'src="/dashboard.js"' in PAGE_HTML
    script = await dash.client.get("/dashboard.js")
    assert script.status == 200 and script.content_type == "application/javascript"


async def test_a_node_on_another_chain_is_shown_down(dash: Dashboard) -> None:
    dash.node(0, 1).chain_id = "shardnet-other"
    await until(lambda: any("on chain 'shardnet-other'" in str(n["error"])
                            for n in dash.aggregator.snapshot()["nodes"]), "refused node")


@pytest.mark.parametrize(("body", "shown"), [
    (b"x" * (ANSWER_BYTES_MAX + 10), "answer larger than"),
    (b"shardnet_height{ 1\n", "unreadable metrics"),
    (b"\xff\xfe not text", "unreadable metrics"),
    (b"# TYPE up gauge\nup 1\n", "not a shardnet node"),
])
async def test_a_node_serving_hostile_metrics_is_shown_down_with_the_reason(
        dash: Dashboard, body: bytes, shown: str) -> None:
    await until(lambda: dash.aggregator.snapshot()["shards"][0]["nodes_up"] == 2, "shard 0 up")
    dash.node(0, 1).metrics_body = body
    await until(lambda: shown in str(next(n for n in dash.aggregator.snapshot()["nodes"]
                                          if n["name"] == "shard0-node1")["error"]),
                f"shard0-node1 down: {shown}")
    await until(lambda: dash.aggregator.snapshot()["shards"][0]["nodes_up"] == 1,
                "shard 0 counting one node up")


async def test_hops_that_are_not_a_list_are_no_hops_not_a_500(dash: Dashboard) -> None:
    digest = "ef" * 32
    dash.node(0, 0).txs[digest] = dash.node(0, 1).txs[digest] = {
        "hash": digest, "status": "committed", "shard": 0, "height": 2, "hops": 5}
    answer = await dash.client.get(f"/api/tx/{digest}")
    assert answer.status == 200 and (await answer.json())["hops"] == []


async def test_a_bug_in_a_handler_is_a_json_500_not_a_traceback(
        dash: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(dash.aggregator, "snapshot", broken)
    answer = await dash.client.get("/api/snapshot")
    assert answer.status == 500
    body = await answer.json()
    assert body["error"] == "internal" and "secret" not in json.dumps(body)
