"""Fake nodes for the dashboard's tests: the routes the dashboard reads, served by
aiohttp on 127.0.0.1 in the test's own loop, with the metrics text a real node's
registry renders."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from node.metrics import NodeMetrics as NodeRegistry
from scripts.cli.load.targets import Network, NodeTarget
from scripts.cli.testnet.generate import TestnetSpec, genesis_document, node_entries
from scripts.dashboard.aggregator import Aggregator
from sharding.genesis import load_genesis

CHAIN_ID = "shardnet-local"


def network_of(targets: list[NodeTarget], shards: int = 2) -> Network:
    spec = TestnetSpec(shards=shards, validators=4, accounts=10)
    genesis = load_genesis(genesis_document(spec, node_entries(spec)))
    return Network(genesis.chain_id, genesis, tuple(targets), "fake")


def aggregator_for(shards: int = 2, targets: list[NodeTarget] | None = None,
                   interval_s: float = 1.0) -> Aggregator:
    return Aggregator(network_of(targets or [], shards), interval_s=interval_s,
                      window_s=60.0)


def block_event(shard: int, height: int, txs: list[str] | None = None,
                origins: list[str] | None = None) -> dict[str, Any]:
    return {"shard": shard, "height": height, "view": 0, "hash": f"{height:064x}",
            "time_ms": 1_700_000_000_000 + 1000 * height, "proposer": 0,
            "txs": txs if txs is not None else [f"{height:02x}" * 32],
            "inbound_receipts": len(origins or []), "inbound_origins": origins or [],
            "certificate": {"view": 0, "signers": [0, 1, 2]}, "failed": []}


@dataclass
class FakeNode:
    shard: int
    index: int
    height: int = 1
    chain_id: str = CHAIN_ID
    txs: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> /v1/txs answer
    queues: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    metrics_body: bytes | None = None  # served instead of the real metrics (hostile node)
    server: TestServer | None = None

    @property
    def name(self) -> str:
        return f"shard{self.shard}-node{self.index}"

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def target(self) -> NodeTarget:
        return NodeTarget(self.name, self.shard, self.index, self.url)

    def commit(self) -> None:
        """One more block, sent to the event streams."""
        self.height += 1
        for queue in self.queues:
            queue.put_nowait(block_event(self.shard, self.height))

    def app(self) -> web.Application:
        routes = web.RouteTableDef()

        @routes.get("/v1/status")
        async def status(request: web.Request) -> web.Response:
            return web.json_response({"chain_id": self.chain_id, "shard": self.shard,
                                      "primary": 0, "height": self.height, "view": 0})

        @routes.get("/metrics")
        async def metrics(request: web.Request) -> web.Response:
            if self.metrics_body is not None:
                return web.Response(body=self.metrics_body, content_type="text/plain")
            registry = NodeRegistry()
            registry.height.set(self.height)
            registry.txs_committed.labels(outcome="ok").inc(10 * self.height)
            registry.peers.set(7)
            return web.Response(body=registry.render(), content_type="text/plain")

        @routes.get("/v1/events")
        async def events(request: web.Request) -> web.StreamResponse:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self.queues.append(queue)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                while True:
                    event = await queue.get()
                    data = json.dumps(event)
                    await response.write(f"event: block\ndata: {data}\n\n".encode())
            finally:
                self.queues.remove(queue)

        @routes.get("/v1/txs/{hash}")
        async def tx(request: web.Request) -> web.Response:
            digest = request.match_info["hash"]
            self.asked.append(digest)
            if digest not in self.txs:
                return web.json_response({"error": "not_found", "detail": "?"}, status=404)
            return web.json_response(self.txs[digest])

        @routes.get("/v1/blocks/{height}")
        async def block(request: web.Request) -> web.Response:
            return web.json_response(block_event(self.shard, int(request.match_info["height"])))

        app = web.Application()
        app.add_routes(routes)
        return app

    async def start(self) -> None:
        self.server = TestServer(self.app(), host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
