"""A fake shardnet node for ``shardnet load`` tests: the API routes the generator
uses, one shard, blocks every ``block_interval_s`` from what was submitted, with
knobs to reject, lose or duplicate transactions. Runs in a thread of its own (its
own event loop), so the command under test runs as it does for users."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from scripts.cli.testnet.generate import TestnetSpec, genesis_document, node_entries
from sharding.genesis import load_genesis, total_supply
from sharding.tx import decode_tx, tx_hash


@dataclass
class Received:
    t: float
    hash: str
    sender: bytes
    nonce: int
    accepted: bool
    error: str | None = None


@dataclass
class FakeNode:
    """Knobs and records; ``url`` is set once the server listens."""

    block_interval_s: float = 0.1
    lose: set[int] = field(default_factory=set)  # positions (in acceptance order) never committed
    duplicate: set[int] = field(default_factory=set)  # positions committed in two blocks
    nonce_jump: dict[bytes, int] = field(default_factory=dict)  # sender -> node nonce after 1st tx
    advertise_url: str | None = None  # what /v1/network advertises (default: the real URL)
    busy_posts: int = 0  # the first N POSTs are refused: 503 + Retry-After, mempool_full
    busy_events: int = 0  # the first N /v1/events requests: 503 + Retry-After: 1
    events_refused: list[float] = field(default_factory=list)  # times of those 503s
    events_accepted: list[float] = field(default_factory=list)  # times of accepted streams
    url: str = ""
    port: int = 0
    received: list[Received] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)  # times of the 503 answers
    accepted_order: list[str] = field(default_factory=list)
    nonces: dict[bytes, int] = field(default_factory=dict)  # committed next nonce per sender
    by_hash: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # the mempool
    by_nonce: dict[tuple[bytes, int], str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    doubled: set[str] = field(default_factory=set)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)
    subscribers: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)

    def genesis(self, port: int) -> dict[str, Any]:
        spec = TestnetSpec(shards=1, validators=4, accounts=100)
        nodes = node_entries(spec)
        doc = genesis_document(spec, nodes)
        for validator in doc["validators"][0]:
            validator["api_address"] = f"127.0.0.1:{port}"
        return doc

    def app(self) -> web.Application:
        genesis = load_genesis(self.genesis(1))
        supply = total_supply(genesis)
        reserves = {a: 0 for a in supply}
        for pool in genesis.pools:
            reserves[pool.asset_a] += pool.reserve_a
            reserves[pool.asset_b] += pool.reserve_b
        routes = web.RouteTableDef()

        @routes.get("/v1/network")
        async def network(request: web.Request) -> web.Response:
            url = self.advertise_url or self.url
            return web.json_response({
                "chain_id": genesis.chain_id, "num_shards": 1, "node": "fake",
                "nodes": [{"shard": 0, "index": i, "name": f"shard0-node{i}", "api_url": url}
                          for i in range(4)],
                "genesis": self.genesis(self.port)})

        @routes.get("/v1/status")
        async def status(request: web.Request) -> web.Response:
            return web.json_response({"chain_id": genesis.chain_id, "shard": 0,
                                      "num_shards": 1, "height": len(self.blocks),
                                      "mempool": len(self.pending), "view": 0,
                                      "view_changes": 0})

        @routes.get("/v1/accounts/{address}")
        async def account(request: web.Request) -> web.Response:
            address = bytes.fromhex(request.match_info["address"])
            return web.json_response({"address": address.hex(), "shard": 0,
                                      "nonce": self.nonces.get(address, 0),
                                      "balances": {"COIN": 10**12, "USD": 10**12}})

        @routes.post("/v1/txs")
        async def submit(request: web.Request) -> web.Response:
            raws = msgspec.msgpack.decode(await request.read())
            now = time.monotonic()
            if self.busy_posts > 0:
                self.busy_posts -= 1
                self.refused.append(now)
                results = [{"hash": tx_hash(decode_tx(raw)).hex(), "accepted": False,
                            "error": "mempool_full", "detail": "full"} for raw in raws]
                return web.json_response({"accepted": 0, "rejected": len(raws),
                                          "results": results}, status=503,
                                         headers={"Retry-After": "1"})
            results = []
            for raw in raws:
                tx = decode_tx(raw)
                digest = tx_hash(tx).hex()
                sender, nonce = tx.body.sender, tx.body.nonce
                if sender in self.nonce_jump:
                    self.nonces[sender] = self.nonce_jump.pop(sender)
                error = None
                if digest in self.by_hash or digest in self.committed or digest in self.lost:
                    error = "duplicate"
                elif nonce < self.nonces.get(sender, 0):
                    error = "wrong_nonce"
                elif (sender, nonce) in self.by_nonce:
                    error = "nonce_taken"
                if error is not None:
                    self.received.append(Received(now, digest, sender, nonce, False, error))
                    results.append({"hash": digest, "accepted": False, "error": error,
                                    "detail": error})
                    continue
                self.by_hash[digest] = (sender, nonce)
                self.by_nonce[(sender, nonce)] = digest
                self.received.append(Received(now, digest, sender, nonce, True))
                position = len(self.accepted_order)
                self.accepted_order.append(digest)
                self.pending.append(digest)
                if position in self.lose:
                    self.lost.add(digest)
                if position in self.duplicate:
                    self.doubled.add(digest)
                results.append({"hash": digest, "accepted": True})
            accepted = sum(r["accepted"] for r in results)
            return web.json_response({"accepted": accepted, "rejected": len(results) - accepted,
                                      "results": results})

        @routes.get("/v1/events")
        async def events(request: web.Request) -> web.StreamResponse:
            if len(self.events_refused) < self.busy_events:
                self.events_refused.append(time.monotonic())
                return web.json_response({"error": "too_many_subscribers"}, status=503,
                                         headers={"Retry-After": "1"})
            self.events_accepted.append(time.monotonic())
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            self.subscribers.append(queue)
            try:
                while True:
                    block = await queue.get()
                    if block is None:
                        break
                    await response.write(f"event: block\ndata: {json.dumps(block)}\n\n".encode())
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            finally:
                self.subscribers.remove(queue)
            return response

        @routes.get("/v1/blocks/{height}")
        async def block(request: web.Request) -> web.Response:
            height = int(request.match_info["height"])
            if not 1 <= height <= len(self.blocks):
                return web.json_response({"error": "not_found"}, status=404)
            return web.json_response(self.blocks[height - 1])

        @routes.get("/v1/txs/{tx_hash}")
        async def tx(request: web.Request) -> web.Response:
            digest = request.match_info["tx_hash"]
            if digest in self.committed:
                return web.json_response({"hash": digest, "status": "finalized",
                                          "height": self.committed[digest]})
            return web.json_response({"error": "not_found"}, status=404)

        @routes.get("/v1/audit")
        async def audit(request: web.Request) -> web.Response:
            balances = {str(a): supply[a] - reserves[a] for a in supply}
            return web.json_response({
                "shard": 0, "height": len(self.blocks), "balances": balances,
                "reserves": {str(a): v for a, v in reserves.items()}, "out_seq": {},
                "in_cursor": {}, "sent": {}, "received": {}})

        app = web.Application()
        app.add_routes(routes)
        return app

    def _ready(self) -> list[str]:
        """Pending transactions whose nonces follow their sender's committed nonce (a
        gapped one waits, as in the node's mempool), taken out of the pool."""
        ready: list[str] = []
        progressed = True
        while progressed:
            progressed = False
            for digest in list(self.pending):
                sender, nonce = self.by_hash[digest]
                if nonce == self.nonces.get(sender, 0):
                    self.nonces[sender] = nonce + 1
                    self.pending.remove(digest)
                    del self.by_hash[digest], self.by_nonce[(sender, nonce)]
                    ready.append(digest)
                    progressed = True
        return ready

    async def produce(self) -> None:
        while True:
            await asyncio.sleep(self.block_interval_s)
            ready = self._ready()
            # A lost transaction uses its nonce but appears in no block.
            first = [d for d in ready if d not in self.lost]
            for batch in (first, [d for d in first if d in self.doubled]):
                if not batch:
                    continue
                block = {"shard": 0, "height": len(self.blocks) + 1, "txs": batch,
                         "inbound_origins": [], "failed": []}
                self.blocks.append(block)
                for digest in batch:
                    self.committed.setdefault(digest, block["height"])
                for queue in self.subscribers:
                    queue.put_nowait(block)


@contextmanager
def fake_node(node: FakeNode | None = None) -> Iterator[FakeNode]:
    """Serve ``node`` on 127.0.0.1 (a free port) in a thread; stop it after."""
    node = node or FakeNode()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: dict[str, Any] = {}

    async def main() -> None:
        runner = web.AppRunner(node.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        node.port = runner.addresses[0][1]
        node.url = f"http://127.0.0.1:{node.port}"
        producer = asyncio.ensure_future(node.produce())
        stop["event"] = asyncio.Event()
        ready.set()
        await stop["event"].wait()
        producer.cancel()
        for queue in node.subscribers:
            queue.put_nowait(None)
        await runner.shutdown()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fake node did not start")
    try:
        yield node
    finally:
        loop.call_soon_threadsafe(stop["event"].set)
        thread.join(10)
        loop.close()
