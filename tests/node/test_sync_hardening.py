"""Block sync against byzantine peers and strangers (issue 14, findings 3 and 6).

A sync answer is checked block by block before the replica sees it (certificate,
and a body that is the one the certified header commits to); a peer that serves
anything else is counted, backed off from, and the next peer asked at once. Peers
are asked in a seeded random order. Serving sync reads the SQLite store on its own
connection, so a peer fetching blocks never holds up a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from consensus.actions import RequestSync
from consensus.certificate import (
    PHASE_COMMIT,
    CommitCertificate,
    IndexedSignature,
    sorted_signatures,
    vote_digest,
)
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import verify_signature
from consensus.kernel.errors import ShardnetError
from node.drops import DropLog
from node.metrics import NodeMetrics
from node.parts import InlineExecutor
from node.sim.network import NetworkSimConfig, NetworkSimulation
from node.sim.world import get_world, make_load
from node.store import BlockCommit, Store, StoredBlock
from node.store.db import Db
from node.store.memory import MemoryStore
from node.sync import (
    SyncCheck,
    SyncClient,
    SyncLimits,
    SyncServer,
    serve_sync,
)
from node.wire import SyncRequest, SyncResponse
from sharding.block import decode_block, encode_block
from sharding.ledger import Ledger

BLOCKS = 6
LIMITS = SyncLimits(batch_blocks_max=64, frame_bytes_max=8 * 1024 * 1024)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def monotonic_ms(self) -> int:
        return self.now

    def wall_ms(self) -> int:
        return self.now


@lru_cache(maxsize=1)
def chain() -> tuple[StoredBlock, ...]:
    """``BLOCKS`` certified blocks of shard 0 (one transfer each), as a store holds them."""
    world = get_world(1, 4, True, 16)
    ledger = Ledger(world.genesis, 0)
    load = make_load(random.Random(1), world, BLOCKS, 1000)
    stored = []
    for height, item in enumerate(load, start=1):
        proposal = ledger.propose([item.tx], [], height=height, view=0, time_ms=height,
                                  proposer=0, txs_max=10)
        assert proposal.block.txs  # something to tamper with
        ledger.commit(proposal.payload, proposal.block_hash, height)
        digest = vote_digest(world.genesis.chain_id, 0, 0, height, proposal.block_hash,
                             PHASE_COMMIT)
        signatures = sorted_signatures({i: world.signers[0][i].sign(digest) for i in range(3)})
        cert = CommitCertificate(0, 0, height, proposal.block_hash, signatures)
        stored.append(StoredBlock(height, proposal.block_hash, proposal.payload, encode(cert)))
    return tuple(stored)


def check() -> SyncCheck:
    world = get_world(1, 4, True, 16)
    return SyncCheck(chain_id=world.genesis.chain_id, shard=0,
                     validators=tuple(v.public_key for v in world.genesis.validators[0]),
                     verify=verify_signature, block_bytes_max=4 * 1024 * 1024)


class Blocks:
    async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
        return [b for b in chain() if first <= b.height <= last]


async def honest(data: bytes) -> bytes:
    store: Any = Blocks()
    return await serve_sync(store, 0, LIMITS, decode(data, SyncRequest, 4096))


def empty_body(payload: bytes) -> bytes:
    """The certified header over a body it does not commit to."""
    block = decode_block(payload)
    return encode_block(msgspec.structs.replace(block, txs=[], inbound=[]))


def tamper(kind: str, answer: bytes) -> bytes:
    blocks = decode(answer, SyncResponse, 64 * 1024 * 1024).blocks
    if kind == "junk":
        return b"\x93junk"
    changed = []
    for b in blocks:
        if kind == "body":
            b = msgspec.structs.replace(b, payload=empty_body(b.payload))
        elif kind == "certificate":
            cert = decode(b.certificate, CommitCertificate, 1 << 20)
            forged = tuple(IndexedSignature(s.index, bytes(64)) for s in cert.signatures)
            b = msgspec.structs.replace(
                b, certificate=encode(msgspec.structs.replace(cert, signatures=forged)))
        elif kind == "other_block":  # another certified block's body under this header
            other = chain()[b.height % BLOCKS]
            b = msgspec.structs.replace(b, payload=other.block)
        elif kind == "gap":
            b = msgspec.structs.replace(b, height=b.height + 1)
        changed.append(b)
    return encode(SyncResponse(changed))


Serve = Callable[[bytes], Awaitable[bytes]]


def client(peers: dict[int, Serve], asked: list[int], *, seed: int = 7,
           metrics: NodeMetrics | None = None, clock: Clock | None = None) -> SyncClient:
    async def request(index: int, data: bytes, timeout_s: float) -> bytes:
        asked.append(index)
        if index not in peers:
            raise ShardnetError("unreachable", reason="stream_error")
        return await peers[index](data)

    metrics = metrics or NodeMetrics()
    log = structlog.get_logger()
    clock = clock or Clock()
    pool: Executor = InlineExecutor()
    return SyncClient(shard=0, me=3, validators=4, request=request, limits=LIMITS,
                      height=lambda: 0, metrics=metrics, log=log,
                      drop=DropLog(log, metrics, clock), check=check(),
                      rng=random.Random(seed), clock=clock, pool=pool)


def byzantine(kind: str) -> Serve:
    async def serve(data: bytes) -> bytes:
        return tamper(kind, await honest(data))
    return serve


def invalid_count(metrics: NodeMetrics, peer: int, reason: str) -> float:
    value = metrics.registry.get_sample_value("shardnet_sync_peer_invalid_total",
                                              {"peer": str(peer), "reason": reason})
    return value or 0.0


# -- the asker -------------------------------------------------------------------------


def test_sync_rotates_away_from_a_peer_that_served_a_tampered_body() -> None:
    asked: list[int] = []
    metrics = NodeMetrics()
    syncer = client({0: byzantine("body"), 1: honest, 2: honest}, asked, metrics=metrics)
    hinted_byzantine = RequestSync(1, BLOCKS, (0,))  # the replica's hint names peer 0 first

    with capture_logs() as logs:
        result = asyncio.run(syncer.fetch(hinted_byzantine))
    assert result is not None
    assert [b.payload for b in result.blocks] == [b.block for b in chain()]  # honest bodies
    assert asked[0] == 0 and len(asked) == 2 and asked[1] in (1, 2)
    assert invalid_count(metrics, 0, "body_mismatch") == 1
    event = next(e for e in logs if e["event"] == "sync.peer_served_invalid")
    assert (event["peer"], event["height"], event["reason"]) == (0, 1, "body_mismatch")
    assert event["log_level"] == "warning" and event["backoff_ms"] > 0

    # Asked again with the same hint, while peer 0 backs off: it is asked last, so
    # not at all (an honest peer answers first).
    asked.clear()
    assert asyncio.run(syncer.fetch(hinted_byzantine)) is not None
    assert asked == [asked[0]] and asked[0] != 0
    assert invalid_count(metrics, 0, "body_mismatch") == 1


def test_a_peer_that_keeps_serving_invalid_answers_backs_off_longer() -> None:
    clock = Clock()
    asked: list[int] = []
    metrics = NodeMetrics()
    syncer = client({0: byzantine("body"), 1: honest}, asked, metrics=metrics, clock=clock)
    backoffs = []
    for _ in range(3):
        asked.clear()
        with capture_logs() as logs:
            asyncio.run(syncer.fetch(RequestSync(1, BLOCKS, (0,))))
        assert asked[0] == 0  # the back-off has run out: hinted peer 0 is first again
        backoffs.append(next(e["backoff_ms"] for e in logs
                             if e["event"] == "sync.peer_served_invalid"))
        clock.now += backoffs[-1]
    assert backoffs[0] < backoffs[1] < backoffs[2]
    assert invalid_count(metrics, 0, "body_mismatch") == 3


@pytest.mark.parametrize(("kind", "reason"), [
    ("body", "body_mismatch"), ("certificate", "bad_certificate"), ("junk", "malformed"),
    ("other_block", "block_hash_mismatch"), ("gap", "wrong_height"),
])
def test_an_answer_that_is_not_the_certified_chain_is_never_handed_to_the_replica(
        kind: str, reason: str) -> None:
    asked: list[int] = []
    metrics = NodeMetrics()
    syncer = client({0: byzantine(kind), 1: byzantine(kind), 2: byzantine(kind)}, asked,
                    metrics=metrics)
    assert asyncio.run(syncer.fetch(RequestSync(1, BLOCKS, ()))) is None
    assert sorted(asked) == [0, 1, 2]
    assert all(invalid_count(metrics, peer, reason) == 1 for peer in (0, 1, 2))


def test_sync_order_is_random_but_replays_with_the_seed() -> None:
    def first_asked(seed: int) -> list[int]:
        asked: list[int] = []
        syncer = client({0: honest, 1: honest, 2: honest}, asked, seed=seed)
        for _ in range(12):
            asyncio.run(syncer.fetch(RequestSync(1, 2, ())))
        return asked

    assert first_asked(5) == first_asked(5)
    assert set(first_asked(5)) == {0, 1, 2}  # the load spreads over every peer
    assert first_asked(5) != first_asked(6)


def test_the_peer_whose_answer_did_not_commit_is_asked_last_next_time() -> None:
    asked: list[int] = []
    syncer = client({0: honest, 1: honest, 2: honest}, asked)
    asyncio.run(syncer.fetch(RequestSync(1, BLOCKS, ())))
    supplier = asked[-1]
    for _ in range(6):  # the replica asks for height 1 again: it did not commit
        asked.clear()
        asyncio.run(syncer.fetch(RequestSync(1, BLOCKS, ())))
        assert asked[0] != supplier
        supplier = asked[-1]


def test_unreachable_peers_are_dropped_not_counted_as_invalid() -> None:
    asked: list[int] = []
    metrics = NodeMetrics()
    syncer = client({2: honest}, asked, metrics=metrics)
    result = asyncio.run(syncer.fetch(RequestSync(1, BLOCKS, (0, 1))))
    assert result is not None and asked[-1] == 2
    assert metrics.registry.get_sample_value(
        "shardnet_messages_dropped_total", {"source": "sync", "reason": "stream_error"}) == 2
    assert all(invalid_count(metrics, p, r) == 0 for p in (0, 1)
               for r in ("malformed", "body_mismatch"))


# -- the server ------------------------------------------------------------------------


def commit_of(block: StoredBlock) -> BlockCommit:
    return BlockCommit(height=block.height, block_hash=block.block_hash, block=block.block,
                       certificate=block.certificate)


def test_sync_serving_does_not_block_commits(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's sync request is stuck mid-read (a slow or stalled reader); the node's
    next commit still goes through (the answer then carries it too: the server reads
    on from where the stalled read stopped)."""
    reading, release = asyncio.Event(), asyncio.Event()
    real_cursor = Db.cursor

    @contextlib.asynccontextmanager
    async def stalled_cursor(self: Db, sql: str, params: Any = ()) -> AsyncIterator[Any]:
        async with real_cursor(self, sql, params) as cursor:
            async def rows() -> AsyncIterator[Any]:
                async for row in cursor:
                    reading.set()
                    await release.wait()
                    yield row
            yield rows()

    async def scenario() -> list[int]:
        store = await Store.open(tmp_path / "node.db")
        try:
            await store.initialize(b"g" * 32, [])
            for block in chain()[:3]:
                await store.commit_block(commit_of(block))
            monkeypatch.setattr(Db, "cursor", stalled_cursor)
            serving = asyncio.ensure_future(
                serve_sync(store, 0, LIMITS, SyncRequest(0, 1, BLOCKS)))
            await asyncio.wait_for(reading.wait(), 30)
            # Bounded: before the fix the commit waited for the read forever.
            await asyncio.wait_for(store.commit_block(commit_of(chain()[3])), 30)
            assert store.latest_height == 4 and not serving.done()
            release.set()
            answer = decode(await serving, SyncResponse, 64 * 1024 * 1024)
            return [b.height for b in answer.blocks]
        finally:
            release.set()
            await store.close()

    assert asyncio.run(scenario()) == [1, 2, 3, 4]


def test_a_sync_answer_is_read_in_bounded_batches() -> None:
    reads: list[tuple[int, int]] = []

    class Recorded(MemoryStore):
        async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
            reads.append((first, last))
            return [b for b in chain() if first <= b.height <= last]

    answer = asyncio.run(serve_sync(Recorded(), 0, LIMITS, SyncRequest(0, 1, 500)))
    assert [b.height for b in decode(answer, SyncResponse, 1 << 26).blocks] == \
        list(range(1, BLOCKS + 1))
    assert all(last - first < 8 for first, last in reads)


def test_sync_server_answers_empty_beyond_its_concurrent_serves() -> None:
    async def scenario() -> tuple[list[int], float | None]:
        release, both_reading = asyncio.Event(), asyncio.Event()
        readers = []

        class Slow(MemoryStore):
            async def get_blocks(self, first: int, last: int) -> list[StoredBlock]:
                readers.append(first)
                if len(readers) == 2:
                    both_reading.set()
                await release.wait()
                return [b for b in chain() if first <= b.height <= last]

        metrics = NodeMetrics()
        server = SyncServer(Slow(), 0, LIMITS, DropLog(structlog.get_logger(), metrics,
                                                       Clock()), serves_max=2)
        busy = [asyncio.ensure_future(server.serve("p", SyncRequest(0, 1, 2)))
                for _ in range(2)]
        await asyncio.wait_for(both_reading.wait(), 30)
        refused = decode(await server.serve("q", SyncRequest(0, 1, 2)), SyncResponse, 1 << 20)
        release.set()
        served = [decode(await t, SyncResponse, 1 << 26) for t in busy]
        assert refused.blocks == []
        return ([len(s.blocks) for s in served],
                metrics.registry.get_sample_value("shardnet_messages_dropped_total",
                                                  {"source": "sync_serve", "reason": "busy"}))

    assert asyncio.run(scenario()) == ([2, 2], 1.0)


# -- the whole network -------------------------------------------------------------------


class ByzantineSyncServer(NetworkSimulation):
    """Node 0/0 (the first primary) answers sync requests with the certified headers
    over empty bodies; it is honest in consensus."""

    def _member(self, nid: Any, peer_id: str, old: Any) -> Any:
        member = super()._member(nid, peer_id, old)
        if nid == (0, 0):
            node = member.node
            serve = node._serve_request

            async def tampered(peer: str, data: bytes) -> bytes:
                answer = await serve(peer, data)
                with contextlib.suppress(Exception):
                    if isinstance(decode(data, SyncRequest, 4096), SyncRequest):
                        return tamper("body", answer)
                return answer

            node._serve_request = tampered
        return member


def test_tampered_sync_answer_is_not_blamed_on_the_primary() -> None:
    """Node 0/3 is down while shard 0 commits blocks, comes back and syncs; node 0/0
    serves it tampered bodies. 0/3 catches up from the honest peers, counts the bad
    answers against 0/0, rejects no block and starts no view change."""
    sim = ByzantineSyncServer(NetworkSimConfig(seed=2, txs=24, load_ms=3000, fault_ms=3000,
                                               crashes=((0, 3, 300, 2500),)))
    result = sim.run()
    assert result.ok, result.describe()
    assert result.faults["crash"] == 1 and result.txs == 24
    assert result.view_changes == 0
    victim = sim.members[(0, 3)].node.metrics.registry
    assert (victim.get_sample_value("shardnet_sync_peer_invalid_total",
                                    {"peer": "0", "reason": "body_mismatch"}) or 0) >= 1
    assert victim.get_sample_value("shardnet_sync_blocks_total") > 0
    assert not [s for m in victim.collect() if m.name == "shardnet_blocks_rejected"
                for s in m.samples if s.value]
    assert victim.get_sample_value("shardnet_messages_dropped_total",
                                   {"source": "pbft", "reason": "bad_block"}) is None
