"""The API under hostile or broken conditions (issue 14 findings 4 and 7): the
last-resort JSON 500, a generated sweep that never reaches it, the caps on event
streams and requests in progress, and slow event subscribers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
import pytest
import structlog
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import CapturingLogger, capture_logs
from yarl import URL

from node.api import MSGPACK, build_app
from node.events import EventHub
from node.node import Node
from node.service import SUBSCRIBER_QUEUE_MAX
from sharding.accounts import derive_account
from tests.node.test_api_http import RecordingService
from tests.node.test_node_parts import make_nodes, transfer


def json_log() -> tuple[Any, CapturingLogger]:
    """A logger rendering like the node's (JSON, tracebacks formatted), and its record."""
    sink = CapturingLogger()
    log = structlog.wrap_logger(sink, processors=[
        structlog.processors.add_log_level, structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer()])
    return log, sink


def logged(sink: CapturingLogger, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(call.args[0]) for call in sink.calls]
    return [line for line in lines if line["event"] == event]


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


# -- the last resort ----------------------------------------------------------------


class BrokenService(RecordingService):
    def status(self) -> dict[str, Any]:
        raise RuntimeError("boom: a bug in the service")


async def test_unexpected_exception_is_a_json_500_with_logged_error_id() -> None:
    log, sink = json_log()
    counted: list[tuple[str, int]] = []
    app = build_app(BrokenService(), body_bytes_max=1024, batch_txs_max=3, log=log,
                    count_request=lambda route, status: counted.append((route, status)))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/status")
        assert response.status == 500
        assert response.content_type == "application/json"
        doc = await response.json()
        assert doc["error"] == "internal" and len(doc["error_id"]) == 16
        assert "boom" not in json.dumps(doc)  # the client learns nothing of the bug
        assert (await client.get("/v1/network")).status == 200  # the API still serves
    (line,) = logged(sink, "api.internal_error")
    assert line["error_id"] == doc["error_id"] and line["level"] == "error"
    assert line["route"] == "/v1/status" and line["method"] == "GET"
    assert "RuntimeError: boom: a bug in the service" in line["exception"]
    assert "Traceback" in line["exception"]
    assert counted[0] == ("/v1/status", 500)


async def test_body_that_is_not_the_gzip_it_claims_is_400() -> None:
    """Found by the sweep: aiohttp's RequestPayloadError reached the last resort."""
    log, sink = json_log()
    app = build_app(RecordingService(), body_bytes_max=1024, batch_txs_max=3, log=log)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/v1/txs", data=b'{"tx": "01"}',
                                     headers={"Content-Encoding": "gzip"})
        assert response.status == 400
        doc = await response.json()
        assert doc["error"] == "malformed" and "gzip" in doc["detail"]
    assert logged(sink, "api.internal_error") == []


# -- the sweep ----------------------------------------------------------------------

ROUTES = ["/v1/txs", "/v1/txs/{}", "/v1/accounts/{}", "/v1/accounts/{}/txs",
          "/v1/blocks/latest", "/v1/blocks/{}", "/v1/status", "/v1/network", "/v1/audit",
          "/v1/receipts", "/metrics", "/{}",
          "/v1/{}", "/v1/blocks/{}/{}"]  # /v1/events streams: its own tests below
NUMBERS = ["0", "1", "2", "3", str(2**63 - 1), str(2**63), str(2**64), "9" * 30, "²",
           "١٢", "1_0", "+1", "-1", " 1", "0x10", "1e3", ""]
# Mostly the route's own method (POST for /v1/txs, GET otherwise), sometimes another.
METHODS = ["route's"] * 6 + ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
CONTENT_TYPES = [None, "application/json", MSGPACK, "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64)
    | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def sweep_requests(known: list[str], valid_tx: bytes) -> st.SearchStrategy[dict[str, Any]]:
    segment = st.one_of(st.text(max_size=80), st.sampled_from(NUMBERS + known),
                        st.binary(max_size=40).map(bytes.hex),
                        st.integers(min_value=0).map(str))
    names = ["dst", "from", "to", "tx", "x", "limit", "before"]
    query = st.lists(st.tuples(st.sampled_from(names) | st.text(max_size=5), segment),
                     max_size=4)
    body = st.one_of(
        st.none(), st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        msgpack_values.map(msgspec.msgpack.encode),
        st.lists(st.binary(max_size=200), max_size=4).map(msgspec.msgpack.encode),
        st.lists(st.binary(max_size=200).map(bytes.hex), max_size=4).map(
            lambda txs: json.dumps({"txs": txs}).encode()),
        st.binary(max_size=200).map(lambda tx: json.dumps({"tx": tx.hex()}).encode()),
        st.just(json.dumps({"tx": valid_tx.hex()}).encode()), st.just(valid_tx))
    return st.fixed_dictionaries({
        "method": st.sampled_from(METHODS), "route": st.sampled_from(ROUTES),
        "segments": st.lists(segment, min_size=2, max_size=2), "query": query,
        "body": body, "content_type": st.sampled_from(CONTENT_TYPES),
        "gzip": st.booleans(),
    })


async def send(client: TestClient[Any, Any], request: dict[str, Any]) -> tuple[int, bytes]:
    path = request["route"].format(*(quote(s, safe="") for s in request["segments"]))
    if request["query"]:
        path += "?" + urlencode(request["query"])
    headers = {}
    if request["content_type"] is not None:
        headers["Content-Type"] = request["content_type"]
    if request["gzip"] and request["body"] is not None:
        headers["Content-Encoding"] = "gzip"  # and the body is not gzip
    method = request["method"]
    if method == "route's":
        method = "POST" if request["route"] == "/v1/txs" else "GET"
    response: ClientResponse = await client.request(
        method, URL(path, encoded=True), data=request["body"], headers=headers)
    async with response:
        return response.status, await response.read()


def test_no_route_answers_5xx_for_a_generated_sweep(tmp_path: Path) -> None:
    """~300 generated requests (paths, numbers, query strings, JSON and msgpack bodies,
    lying headers) against a node on memory parts with a committed block: every answer
    is below 500 and nothing reaches the last-resort middleware."""
    log, sink = json_log()
    loop = asyncio.new_event_loop()
    nodes = make_nodes(tmp_path)
    statuses: dict[int, int] = {}

    async def start() -> tuple[TestClient[Any, Any], list[str]]:
        for node in nodes:
            await node.start()
        service = nodes[0].service
        events = service.subscribe_blocks()
        (result,) = await service.submit_txs([transfer(0)])
        assert result.accepted and result.tx_hash is not None
        async with asyncio.timeout(30):
            async for event in events:
                if result.tx_hash.hex() in event["txs"]:
                    break
        await events.aclose()
        app = build_app(service, body_bytes_max=64 * 1024, batch_txs_max=8, log=log)
        client = TestClient(TestServer(app))
        await client.start_server()
        known = [result.tx_hash.hex(), derive_account("load", 0).public_key.hex()]
        return client, known

    async def stop(client: TestClient[Any, Any] | None) -> None:
        if client is not None:
            await client.close()
        for node in nodes:
            await node.stop()

    client: TestClient[Any, Any] | None = None
    try:
        client, known = loop.run_until_complete(start())

        @settings(max_examples=300, database=None)
        @given(request=sweep_requests(known, transfer(1)))
        def probe(request: dict[str, Any]) -> None:
            assert client is not None
            status, body = loop.run_until_complete(send(client, request))
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (request, status, body[:500])

        probe()
    finally:
        loop.run_until_complete(stop(client))
        loop.close()
    assert logged(sink, "api.internal_error") == []
    # The sweep reached real answers, not only 404s for made-up paths.
    assert {200, 400, 404} <= set(statuses), statuses


# -- event streams and requests in progress -------------------------------------------


class StreamingService(RecordingService):
    """Block events from a real hub, published by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.hub = EventHub(queue_max=4)

    def subscribe_blocks(self) -> Any:
        return self.hub.subscribe()


@pytest.fixture
async def streaming() -> AsyncIterator[tuple[StreamingService, TestClient[Any, Any]]]:
    service = StreamingService()
    app = build_app(service, body_bytes_max=1024, batch_txs_max=3, connections_max=4,
                    events_subscribers_max=2, events_heartbeat_s=0.05)
    async with TestClient(TestServer(app)) as client:
        yield service, client


async def refused_503(response: ClientResponse, reason: str) -> None:
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Connection"] == "close"
    doc = await response.json()
    assert doc["error"] == reason and "limit" in doc["detail"]


async def next_event(response: ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return event


async def test_event_subscribers_beyond_the_cap_get_503(
        streaming: tuple[StreamingService, TestClient[Any, Any]]) -> None:
    service, client = streaming
    first, second = await client.get("/v1/events"), await client.get("/v1/events")
    assert (first.status, second.status) == (200, 200)
    # Subscribed before the headers went out: an event published now reaches both.
    service.hub.publish({"height": 7})
    assert (await next_event(first))["height"] == 7
    assert (await next_event(second))["height"] == 7
    await refused_503(await client.get("/v1/events"), "too_many_subscribers")
    assert (await client.get("/v1/status")).status == 200  # other routes still serve
    first.close()  # a client leaves: the keep-alive write finds it, its slot frees

    async def third_accepted() -> bool:
        response = await client.get("/v1/events")
        if response.status == 200:
            response.close()
            return True
        await refused_503(response, "too_many_subscribers")
        return False

    await eventually(third_accepted, "the left client's slot to free")
    second.close()
    await eventually(lambda: asyncio.sleep(0, len(service.hub) == 0),
                     "every subscription to leave the hub")


async def test_connections_beyond_the_cap_get_503(
        streaming: tuple[StreamingService, TestClient[Any, Any]]) -> None:
    _, client = streaming
    # Four requests in progress (the cap): two event streams and two slow uploads.
    streams = [await client.get("/v1/events") for _ in range(2)]
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"tx": "01'
        await release.wait()
        yield b'"}'

    uploads = [asyncio.ensure_future(client.post("/v1/txs", data=slow_body()))
               for _ in range(2)]

    async def refused() -> bool:
        response = await client.get("/v1/status")
        if response.status == 200:
            return False
        await refused_503(response, "too_many_connections")
        return True

    await eventually(refused, "the uploads to hold the last two slots")
    release.set()
    assert [(await upload).status for upload in uploads] == [202, 202]
    assert (await client.get("/v1/status")).status == 200  # their slots are free again
    for stream in streams:
        stream.close()


async def test_slow_subscriber_is_dropped_not_buffered_forever(tmp_path: Path) -> None:
    node: Node = make_nodes(tmp_path)[0]
    with capture_logs() as logs:
        await node.start()
        try:
            service = node.service
            slow, fast = service.subscribe_blocks(), service.subscribe_blocks()
            for height in range(SUBSCRIBER_QUEUE_MAX):
                service.events.publish({"height": height})
            assert [(await anext(fast))["height"] for _ in range(SUBSCRIBER_QUEUE_MAX)] == (
                list(range(SUBSCRIBER_QUEUE_MAX)))
            assert slow.backlog == SUBSCRIBER_QUEUE_MAX  # bounded: full, not growing
            service.events.publish({"height": SUBSCRIBER_QUEUE_MAX})
            # The slow one is ended and its backlog freed; the fast one carries on.
            assert slow.dropped and slow.backlog <= 1
            assert [event async for event in slow] == []
            assert (await anext(fast))["height"] == SUBSCRIBER_QUEUE_MAX
            assert len(service.events) == 1
            metrics = service.metrics_text().decode()
            assert 'shardnet_events_subscribers_dropped_total{reason="slow"} 1.0' in metrics
            await fast.aclose()
            assert len(service.events) == 0
        finally:
            await node.stop()
    dropped = [line for line in logs if line["event"] == "events.subscriber_dropped"]
    assert len(dropped) == 1
    assert dropped[0]["reason"] == "slow" and dropped[0]["backlog"] == SUBSCRIBER_QUEUE_MAX


async def test_subscriber_that_stops_reading_is_cut_off_and_frees_its_slot() -> None:
    """A client that subscribes and never reads: once its socket is full the write
    times out, the node logs it, aborts the connection and the slot is free again."""
    log, sink = json_log()
    service = StreamingService()
    app = build_app(service, body_bytes_max=1024, batch_txs_max=3, events_subscribers_max=1,
                    events_heartbeat_s=0.05, events_write_timeout_s=0.2, log=log)
    async with TestClient(TestServer(app)) as client:
        stalled = socket.socket()
        try:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.setblocking(False)
            await asyncio.get_running_loop().sock_connect(
                stalled, (client.server.host, client.server.port))
            await asyncio.get_running_loop().sock_sendall(
                stalled, b"GET /v1/events HTTP/1.1\r\nHost: node\r\n\r\n")
            await eventually(lambda: asyncio.sleep(0, len(service.hub) == 1),
                             "the silent client to subscribe")
            await refused_503(await client.get("/v1/events"), "too_many_subscribers")
            big = {"height": 1, "pad": "x" * (4 * 1024 * 1024)}  # more than socket buffers
            for _ in range(3):  # below the hub's queue: only the socket can stall it
                service.hub.publish(big)

            async def slot_free() -> bool:
                response = await client.get("/v1/events")
                response.close()
                return response.status == 200

            await eventually(slot_free, "the stalled subscriber's slot to free")
        finally:
            stalled.close()
    (line,) = logged(sink, "events.subscriber_stalled")
    assert line["level"] == "warning" and line["stalled_s"] == 0.2


async def test_events_between_subscribe_and_first_read_are_not_missed(tmp_path: Path) -> None:
    """The /v1/events subscribe race: the subscription exists when subscribe_blocks()
    returns (the handler sends its headers after that), not at the first read."""
    node: Node = make_nodes(tmp_path)[0]
    await node.start()
    try:
        events = node.service.subscribe_blocks()
        node.service.events.publish({"height": 1})  # before anyone iterates
        assert (await anext(aiter(events)))["height"] == 1
        await events.aclose()
        assert len(node.service.events) == 0
    finally:
        await node.stop()
